/**
 * docker-compose.dev.yml and the systemd units, checked by the real tools as shipped: Debian's
 * docker-compose (Compose v1, `config`) and `systemd-analyze verify`, plus what they cannot see
 * (the same Node flags as `flotilla up`, Type=notify for every service, one unit per process).
 */
import { test } from "node:test";
import { spawnSync } from "node:child_process";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { parse } from "yaml";
import { loadConfig, SERVICE_NAMES } from "#libs/config";
import { repoRoot } from "#libs/proto";
import { SERVICE_NODE_FLAGS } from "#cli/supervisor";

const ROOT = repoRoot();
const TOP_LEVEL = new Set(["version", "services", "volumes", "networks", "configs", "secrets"]);
const SERVICE_KEYS = new Set(["build", "image", "restart", "volumes", "command", "depends_on", "privileged", "pid", "ports", "environment", "networks", "healthcheck", "entrypoint"]);

test("docker-compose.dev.yml: valid compose with NATS and one container per service", () => {
  const doc = parse(fs.readFileSync(path.join(ROOT, "docker-compose.dev.yml"), "utf8"), { merge: true }) as Record<string, unknown>;
  for (const k of Object.keys(doc)) assert.ok(TOP_LEVEL.has(k) || k.startsWith("x-"), `top-level key ${k}`);
  const services = doc.services as Record<string, Record<string, unknown>>;
  const volumes = Object.keys((doc.volumes as Record<string, unknown>) ?? {});
  assert.deepEqual(Object.keys(services).sort(), ["nats", ...SERVICE_NAMES].sort());
  for (const [name, s] of Object.entries(services)) {
    for (const k of Object.keys(s)) assert.ok(SERVICE_KEYS.has(k), `${name}: unknown key ${k}`);
    assert.ok(s.image || s.build, `${name} has an image or a build`);
    assert.ok(Array.isArray(s.command), `${name}: command is a list`);
    const deps = Array.isArray(s.depends_on) ? (s.depends_on as string[]) : Object.keys((s.depends_on as Record<string, unknown> | undefined) ?? {});
    for (const d of deps) assert.ok(services[d], `${name} depends on unknown ${d}`);
    for (const v of (s.volumes as string[] | undefined) ?? []) {
      const [src, dst] = v.split(":");
      assert.ok(dst?.startsWith("/"), `${name}: volume target ${v}`);
      if (!src!.startsWith(".") && !src!.startsWith("/")) assert.ok(volumes.includes(src!), `${name}: named volume ${src} declared`);
      if (src!.startsWith("./deploy")) assert.ok(fs.existsSync(path.join(ROOT, src!)), `${src} exists`);
    }
    for (const p of (s.ports as string[] | undefined) ?? []) assert.match(p, /^(\d+\.\d+\.\d+\.\d+:)?\d+:\d+$/);
    if (name !== "nats") {
      // The same Node flags as `flotilla up` gives its services, then the service's main.
      const cmd = s.command as string[];
      assert.deepEqual(cmd.slice(0, SERVICE_NODE_FLAGS.length), SERVICE_NODE_FLAGS);
      assert.equal(cmd[SERVICE_NODE_FLAGS.length], `dist/services/${name}/main.js`);
      assert.ok(fs.existsSync(path.join(ROOT, "services", name, "main.ts")), `services/${name}/main.ts exists`);
      // healthy once its grpc.health.v1 answers SERVING, the readiness `flotilla up` waits for
      assert.deepEqual((s.healthcheck as { test: string[] }).test, ["CMD", "node", "bin/flotilla", "health", "--config", "/etc/flotilla/config.toml", name]);
    }
  }
  assert.ok(fs.existsSync(path.join(ROOT, "Dockerfile")));
  // Compose v1 only reads the 2.x/3.x formats, without a top-level name; Compose v2 reads those too.
  assert.match(String(doc.version), /^[23]\.\d+$/);
  const gwDeps = services.gateway!.depends_on as Record<string, { condition: string }>;
  for (const svc of SERVICE_NAMES.filter((n) => n !== "gateway")) assert.equal(gwDeps[svc]?.condition, "service_healthy", `the gateway waits for ${svc} to serve`);
  const cfg = loadConfig(path.join(ROOT, "deploy/compose/config.toml"));
  assert.equal(cfg.flotilla.nats.url, "nats://nats:4222");
});

function unit(file: string): Record<string, Record<string, string[]>> {
  const out: Record<string, Record<string, string[]>> = {};
  let section = "";
  for (const raw of fs.readFileSync(file, "utf8").split("\n")) {
    const l = raw.trim();
    if (!l || l.startsWith("#")) continue;
    const m = /^\[(\w+)\]$/.exec(l);
    if (m) {
      section = m[1]!;
      out[section] = {};
      continue;
    }
    const eq = l.indexOf("=");
    assert.ok(section && eq > 0, `${file}: bad line ${l}`);
    const k = l.slice(0, eq);
    (out[section]![k] ??= []).push(l.slice(eq + 1));
  }
  return out;
}

test("deploy/systemd: one unit per service, NATS, and a target for the stack", () => {
  const dir = path.join(ROOT, "deploy/systemd");
  const target = unit(path.join(dir, "flotilla.target"));
  const wants = target.Unit!.Wants!.join(" ").split(/\s+/);
  for (const s of SERVICE_NAMES) {
    const u = unit(path.join(dir, `flotilla-${s}.service`));
    assert.match(u.Service!.ExecStart![0]!, new RegExp(`^/usr/bin/node ${SERVICE_NODE_FLAGS.join(" ")} /opt/flotilla/dist/services/${s}/main\\.js --config /etc/flotilla/config\\.toml$`));
    assert.deepEqual(u.Unit!.PartOf, ["flotilla.target"]);
    assert.deepEqual(u.Install!.WantedBy, ["flotilla.target"]);
    assert.ok(wants.includes(`flotilla-${s}.service`));
  }
  assert.deepEqual(unit(path.join(dir, "flotilla-tasks.service")).Service!.KillMode, ["process"], "shims outlive a tasks restart");
  assert.ok(wants.includes("flotilla-nats.service"));
  assert.equal(loadConfig(path.join(dir, "config.toml")).flotilla.nats.url, "nats://127.0.0.1:4222");
  assert.equal(loadConfig(path.join(ROOT, "deploy/flotilla.toml")).grpc.address, "/run/flotilla/flotilla.sock");
});

test("docker-compose.dev.yml: Debian's docker-compose (v1) accepts it", () => {
  const r = spawnSync("docker-compose", ["-f", "docker-compose.dev.yml", "config", "-q"], { cwd: ROOT, encoding: "utf8" });
  assert.equal(r.error, undefined, "docker-compose is installed (scripts/install-deps.sh)");
  assert.equal(r.status, 0, r.stderr);
  const services = spawnSync("docker-compose", ["-f", "docker-compose.dev.yml", "config", "--services"], { cwd: ROOT, encoding: "utf8" });
  assert.deepEqual(services.stdout.trim().split("\n").sort(), ["nats", ...SERVICE_NAMES].sort());
});

test("deploy/systemd: systemd-analyze verify passes; services are Type=notify, NATS is Debian's binary", () => {
  const dir = path.join(ROOT, "deploy/systemd");
  const units = fs.readdirSync(dir).filter((f) => /\.(service|target)$/.test(f)).sort();
  assert.equal(units.length, SERVICE_NAMES.length + 2);
  const r = spawnSync("systemd-analyze", ["verify", ...units.map((u) => path.join(dir, u))], { encoding: "utf8" });
  assert.equal(r.error, undefined, "systemd-analyze is installed (package systemd)");
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stderr.trim(), "", "no warnings");
  for (const s of SERVICE_NAMES) {
    const svc = unit(path.join(dir, `flotilla-${s}.service`)).Service!;
    assert.deepEqual([svc.Type, svc.NotifyAccess], [["notify"], ["all"]], `flotilla-${s}.service`);
  }
  const nats = unit(path.join(dir, "flotilla-nats.service")).Service!.ExecStart![0]!.split(" ")[0]!;
  assert.ok(fs.existsSync(nats), `${nats} exists`);
  const target = unit(path.join(dir, "flotilla.target")).Unit!;
  assert.deepEqual(target.After!.join(" ").split(/\s+/).sort(), target.Wants!.join(" ").split(/\s+/).sort(), "the target is reached once every unit is ready");
});
