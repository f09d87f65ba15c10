import { test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { fromToml, grpcTarget, loadConfig, onThisHost, pluginConfig, unixPath } from "#libs/config";
import { applyMapMask, validateLabels } from "#libs/fieldmask";
import { subjectFor, validateTopic } from "#libs/events";
import { validateIdentifier } from "#libs/context";

test("containerd-style TOML with a [flotilla] table", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "cfg-"));
  const f = path.join(dir, "c.toml");
  fs.writeFileSync(f, `
version = 2
root = "/r"
state = "/s"
[grpc]
  address = "/s/api.sock"
[metrics]
  address = "127.0.0.1:1338"
[debug]
  level = "debug"
[plugins."io.containerd.snapshotter.v1.overlayfs"]
  root_path = "/x"
[flotilla]
  otlp_endpoint = "http://127.0.0.1:4318/v1/traces"
[flotilla.nats]
  url = "nats://127.0.0.1:4222"
[flotilla.services.content]
  address = "tcp://0.0.0.0:7001"
`);
  const c = loadConfig(f);
  fs.rmSync(dir, { recursive: true });
  assert.equal(c.root, "/r");
  assert.equal(c.grpc.address, "/s/api.sock");
  assert.equal(c.flotilla.services.gateway.address, "/s/api.sock");
  assert.equal(c.flotilla.services.gateway.metrics_address, "127.0.0.1:1338");
  assert.equal(c.flotilla.services.images.address, "unix:///s/images.sock");
  assert.equal(c.flotilla.services.content.address, "tcp://0.0.0.0:7001");
  assert.equal(grpcTarget(c.flotilla.services.content.address), "0.0.0.0:7001");
  assert.equal(unixPath(c.flotilla.services.images.address), "/s/images.sock");
  assert.equal(c.flotilla.nats.url, "nats://127.0.0.1:4222");
  assert.equal(c.debug.level, "debug");
  assert.deepEqual({ ...pluginConfig(c, "io.containerd.snapshotter.v1", "overlayfs") }, { root_path: "/x" });
  assert.throws(() => fromToml({ version: 7 }), /unsupported version/);
  assert.throws(() => loadConfig("/nonexistent/x.toml"), /invalid argument/);
});

test("label masks: whole map, one key, empty value deletes", () => {
  assert.deepEqual(applyMapMask("labels", { a: "1", b: "2" }, { a: "", c: "3" }, ["labels.a", "labels.c"]), { b: "2", c: "3" });
  assert.deepEqual(applyMapMask("labels", { a: "1" }, { z: "9" }, ["labels"]), { z: "9" });
  assert.equal(validateLabels({ k: "x".repeat(5000) })?.includes("maximum size"), true);
});

test("identifiers, topics and NATS subjects", () => {
  validateIdentifier("k8s.io");
  assert.throws(() => validateIdentifier("bad name"), /invalid argument/);
  assert.throws(() => validateIdentifier("a".repeat(77)), /maximum length/);
  validateTopic("/tasks/exec-added");
  assert.throws(() => validateTopic("tasks/exit"), /invalid argument/);
  assert.throws(() => validateTopic("/tasks/?"), /invalid argument/);
  assert.equal(subjectFor("flotilla.events", "k8s.io", "/tasks/exit"), "flotilla.events.k8s~io.tasks.exit");
});

test("deploy/flotilla.toml loads, and its task runtime table is what the tasks process runs by default", async () => {
  const { repoRoot } = await import("#libs/proto");
  const { runtimesConfig } = await import("#services/tasks/src/runtime/runtimes");
  const { RUNTIME_TASK } = await import("#services/tasks/components");
  const cfg = loadConfig(path.join(repoRoot(), "deploy", "flotilla.toml"));
  const state = path.join(cfg.state, "tasks");
  const table = RUNTIME_TASK.config.check(pluginConfig(cfg, "io.containerd.runtime.v2", "task"), ["plugins", "io.containerd.runtime.v2.task"]);
  assert.deepEqual(runtimesConfig(table, state), runtimesConfig({}, state));
});

test("config: which service addresses are on this host (the gateway's read views and blob reads need it)", () => {
  for (const a of ["unix:///run/flotilla/content.sock", "/run/x.sock", "unix:/x.sock", "127.0.0.1:7001", "tcp://127.0.0.1:7001", "localhost:7001", "[::1]:7001", "0.0.0.0:7001", "[::]:7001"]) assert.equal(onThisHost(a), true, a);
  for (const a of ["tcp://10.0.0.5:7001", "content.internal:7001", "[fd00::1]:7001"]) assert.equal(onThisHost(a), false, a);
});
