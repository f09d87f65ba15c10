/**
 * The CRI's configuration, `[plugins."io.containerd.grpc.v1.cri"]`, in containerd's shape: the
 * conformance kit's containerd config and `containerd config default` are accepted as they are by
 * `flotilla config check`; a wrong type, an unknown key or a combination containerd refuses is an
 * error naming the key; what is not written takes containerd's default.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { parse as parseToml, stringify as stringifyToml } from "smol-toml";
import { criConfig, runtimeFor } from "#services/cri/src/config";
import { CRI_KIT } from "#test/cri/helpers";
import { flotilla } from "#test/helpers/flotilla";

const CRI = '[plugins."io.containerd.grpc.v1.cri"]';
/** The header of a sub-table of the CRI's table. */
const sub = (t: string): string => `[plugins."io.containerd.grpc.v1.cri".${t}]`;

/** A config file with `toml` after a private root and state; `fn` gets its path. */
async function withConfig<T>(toml: string, fn: (file: string, dir: string) => Promise<T>): Promise<T> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "flt-cricfg-"));
  try {
    const file = path.join(dir, "config.toml");
    fs.writeFileSync(file, `version = 2\nroot = ${JSON.stringify(path.join(dir, "root"))}\nstate = ${JSON.stringify(path.join(dir, "state"))}\n${toml}\n`);
    return await fn(file, dir);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** `flotilla config check` of `toml`: its exit code and output, the file's path spelled FILE. */
async function configCheck(toml: string): Promise<{ code: number; out: string }> {
  return withConfig(toml, async (file) => {
    const r = await flotilla(["config", "check", "-c", file]);
    return { code: r.code, out: (r.stdout + r.stderr).split(file).join("FILE") };
  });
}

async function rejected(toml: string): Promise<string> {
  const r = await configCheck(toml);
  assert.equal(r.code, 1, `accepted:\n${toml}\n${r.out}`);
  return r.out.trim();
}

/** The kit's containerd config, its top-level keys (paths and sockets) dropped: the CRI tables as the suite runs them. */
function kitCriTables(dir: string): string {
  const doc = parseToml(fs.readFileSync(path.join(CRI_KIT, "examples", "containerd-config.toml"), "utf8").split("@DIR@").join(dir)) as Record<string, unknown>;
  return stringifyToml({ plugins: doc.plugins as Record<string, unknown> });
}

test("cri config: the conformance kit's containerd config is accepted as it is, and read with containerd's meaning", async () => {
  const tables = kitCriTables("/var/tmp/kit");
  const r = await configCheck(tables);
  assert.equal(r.code, 0, r.out);
  assert.ok(r.out.endsWith("FILE: ok\n"), r.out);
  assert.ok(!r.out.includes("ignoring"), `the CRI table is Flotilla's now: ${r.out}`);

  const cfg = criConfig((parseToml(tables) as { plugins: Record<string, Record<string, unknown>> }).plugins["io.containerd.grpc.v1.cri"]);
  assert.equal(cfg.sandbox_image, "registry.k8s.io/pause:3.6");
  assert.equal(cfg.stream_server_address, "127.0.0.1");
  assert.equal(cfg.stream_server_port, "0");
  assert.equal(cfg.restrict_oom_score_adj, true);
  assert.equal(cfg.enable_selinux, false);
  assert.equal(cfg.containerd.snapshotter, "overlayfs");
  assert.equal(runtimeFor(cfg, "")?.runtime_type, "io.containerd.runc.v2");
  assert.equal(runtimeFor(cfg, "runc")?.sandboxer, "podsandbox");
  assert.equal(runtimeFor(cfg, "kata"), undefined);
  assert.deepEqual(cfg.cni.bin_dirs, ["/usr/lib/cni"]);
  assert.equal(cfg.cni.conf_dir, "/var/tmp/kit/cni/net.d");
  assert.equal(cfg.cni.max_conf_num, 1);
  assert.deepEqual(cfg.registry.config_paths, ["/var/tmp/kit/certs.d"]);
});

test("cri config: `containerd config default` (every key of containerd 1.6's CRI, deprecated tables included) is accepted", async () => {
  const r0 = spawnSync("containerd", ["config", "default"], { encoding: "utf8" });
  assert.equal(r0.status, 0, r0.stderr);
  const doc = parseToml(r0.stdout) as { plugins: Record<string, unknown> };
  const r = await configCheck(stringifyToml({ plugins: { "io.containerd.grpc.v1.cri": doc.plugins["io.containerd.grpc.v1.cri"] } }));
  assert.equal(r.code, 0, r.out);
  const cfg = criConfig(doc.plugins["io.containerd.grpc.v1.cri"] as Record<string, unknown>);
  // containerd's /opt/cni/bin, written out by `config default`, falls back to Debian's directory.
  assert.deepEqual(cfg.cni.bin_dirs, ["/opt/cni/bin", "/usr/lib/cni"]);
  assert.equal(cfg.containerd.default_runtime_name, "runc");
  assert.deepEqual(Object.keys(cfg.containerd.runtimes).sort(), ["runc"], "an empty default_runtime / untrusted_workload_runtime adds no handler");
});

test("cri config: nothing written takes containerd's defaults (a fresh stack serves CRI out of the box)", () => {
  const cfg = criConfig(undefined);
  assert.equal(cfg.sandbox_image, "registry.k8s.io/pause:3.6");
  assert.equal(cfg.stream_server_address, "127.0.0.1");
  assert.equal(cfg.stream_server_port, "0");
  assert.equal(cfg.stream_idle_timeout_ms, 4 * 3600_000);
  assert.equal(cfg.max_container_log_line_size, 16384);
  assert.equal(cfg.stats_collect_period, 10);
  assert.equal(cfg.selinux_category_range, 1024);
  assert.equal(cfg.max_concurrent_downloads, 3);
  assert.equal(cfg.tolerate_missing_hugetlb_controller, true);
  assert.equal(cfg.disable_hugetlb_controller, true);
  assert.equal(cfg.restrict_oom_score_adj, false);
  assert.equal(cfg.image_pull_progress_timeout_ms, 5 * 60_000);
  assert.equal(cfg.containerd.snapshotter, "overlayfs");
  assert.equal(cfg.containerd.default_runtime_name, "runc");
  assert.equal(cfg.containerd.disable_snapshot_annotations, true);
  assert.equal(cfg.containerd.runtimes.runc?.runtime_type, "io.containerd.runc.v2");
  assert.deepEqual(cfg.cni.bin_dirs, ["/opt/cni/bin", "/usr/lib/cni"]);
  assert.equal(cfg.cni.conf_dir, "/etc/cni/net.d");
  assert.equal(cfg.cni.max_conf_num, 1);
  assert.deepEqual(cfg.registry.config_paths, []);
  assert.equal(cfg.image_decryption.key_model, "node");
});

test("cri config: handlers, registry credentials and the deprecated spellings read as containerd reads them", () => {
  const cfg = criConfig(parseToml(`
sandbox_image = "registry.k8s.io/pause:3.9"
[containerd]
  default_runtime_name = "crun"
  [containerd.runtimes.crun]
    runtime_type = "io.containerd.crun.v2"
    pod_annotations = ["io.kubernetes.cri.*"]
  [containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [containerd.runtimes.runc.options]
      SystemdCgroup = true
      BinaryName = "/usr/sbin/runc"
      SomethingNewer = "kept"
  [containerd.runtimes.sb]
    runtime_type = "io.containerd.runc.v2"
    sandboxer = "shim"
[registry]
  config_path = "/etc/containerd/certs.d:/etc/docker/certs.d"
  [registry.configs."registry.example.com".auth]
    username = "u"
    password = "p"
  [registry.auths."https://old.example.com"]
    auth = "dTpw"
  [registry.headers]
    X-Custom = ["1", "2"]
`) as Record<string, unknown>);
  assert.equal(cfg.sandbox_image, "registry.k8s.io/pause:3.9");
  assert.equal(runtimeFor(cfg, "")?.runtime_type, "io.containerd.crun.v2");
  assert.deepEqual(runtimeFor(cfg, "crun")?.pod_annotations, ["io.kubernetes.cri.*"]);
  assert.deepEqual(runtimeFor(cfg, "runc")?.options, { SystemdCgroup: true, BinaryName: "/usr/sbin/runc", SomethingNewer: "kept" });
  assert.equal(runtimeFor(cfg, "sb")?.sandboxer, "shim");
  assert.deepEqual(cfg.registry.config_paths, ["/etc/containerd/certs.d", "/etc/docker/certs.d"]);
  assert.deepEqual(cfg.registry.auths["registry.example.com"], { username: "u", password: "p", auth: "", identitytoken: "" });
  assert.equal(cfg.registry.auths["old.example.com"]?.auth, "dTpw", "an `auths` endpoint URL is keyed by its host");
  assert.deepEqual(cfg.registry.headers, { "X-Custom": "1" });

  const legacy = criConfig(parseToml(`
[containerd.default_runtime]
  runtime_type = "io.containerd.runc.v2"
[containerd.untrusted_workload_runtime]
  runtime_type = "io.containerd.runc.v2"
[registry.mirrors."docker.io"]
  endpoint = ["http://127.0.0.1:5001"]
`) as Record<string, unknown>);
  assert.equal(legacy.containerd.default_runtime_name, "default");
  assert.equal(runtimeFor(legacy, "untrusted")?.runtime_type, "io.containerd.runc.v2");
  assert.deepEqual(legacy.registry.mirrors, { "docker.io": ["http://127.0.0.1:5001"] });
});

test("cri config: a wrong type, an unknown key or a combination containerd refuses fails the check, naming the key", async () => {
  const cases: [string, string][] = [
    [`${CRI}\nstream_server_port = 10010`, `${CRI} stream_server_port: expected a string, got integer`],
    [`${CRI}\nstream_server_port = "any"`, `${CRI} stream_server_port: expected a port number as a string (e.g. "0", "10010"), got "any"`],
    [`${CRI}\nrestrict_oom_score_adj = "true"`, `${CRI} restrict_oom_score_adj: expected a boolean, got string`],
    [`${CRI}\nsandbox_imag = "registry.k8s.io/pause:3.6"`, `${CRI} sandbox_imag: unknown key`],
    [`${CRI}\nstream_idle_timeout = "forever"`, `${CRI} stream_idle_timeout: invalid duration "forever" (e.g. "4h0m0s", "30s")`],
    [`${sub("cni")}\nmax_conf_num = "1"`, `[plugins."io.containerd.grpc.v1.cri".cni] max_conf_num: expected an integer, got string`],
    [`${sub("cni")}\nbin_dir = ["/usr/lib/cni"]`, `[plugins."io.containerd.grpc.v1.cri".cni] bin_dir: expected a string, got array`],
    [`${sub("containerd.runtimes.runc")}\nruntime_type = 2`, `[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc] runtime_type: expected a string, got integer`],
    [`${sub("containerd.runtimes.runc.options")}\nSystemdCgroup = "true"`, `[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options] SystemdCgroup: expected a boolean, got string`],
    [`${sub("containerd")}\ndefault_runtime_name = "kata"`, `[plugins."io.containerd.grpc.v1.cri".containerd] default_runtime_name: no corresponding runtime configured in \`containerd.runtimes\` for \`containerd\` \`default_runtime_name = "kata"\``],
    [`${sub("registry")}\nconfig_path = "/etc/containerd/certs.d"\n[plugins."io.containerd.grpc.v1.cri".registry.mirrors."docker.io"]\nendpoint = ["https://m"]`, `[plugins."io.containerd.grpc.v1.cri".registry] mirrors: \`mirrors\` cannot be set when \`config_path\` is provided`],
    [`${sub("registry.configs.\"r.example.com\".auth")}\nusername = 7`, `[plugins."io.containerd.grpc.v1.cri".registry.configs."r.example.com".auth] username: expected a string, got integer`],
  ];
  for (const [toml, want] of cases) assert.equal(await rejected(toml), `flotilla config: config FILE: ${want}: invalid argument`, toml);
});
