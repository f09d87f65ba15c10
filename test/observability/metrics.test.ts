/**
 * Prometheus metrics in containerd's shape on a stack from `bin/flotilla up`, driven with the real ctr:
 * the tasks process's `/v1/metrics` has the container_* cgroup families of a running container (with
 * its `container_id` and `namespace`), gRPC code labels are Go's (`NotFound`), and a call the gateway
 * forwards is counted by its owner only.
 */
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as http from "node:http";
import * as path from "node:path";
import { after, before, describe, it } from "node:test";
import type { ServiceName } from "#libs/config";
import { startStack, waitFor, type Stack } from "../harness";
import { busyboxRootfs, rootfsArgs, stopStackAndCleanup, waitTaskStatus } from "../tasks/helpers";

const SERVICES: ServiceName[] = ["content", "snapshots", "images", "tasks", "transfer", "sandbox", "gateway"];

function get(address: string, urlPath: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get(`http://${address}${urlPath}`, (res) => {
        let body = "";
        res.on("data", (c: Buffer) => (body += c.toString()));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
      })
      .on("error", reject);
  });
}

/** Series lines (name{labels} value) of an exposition whose line starts with `prefix` and mentions every label given. */
function series(body: string, prefix: string, labels: Record<string, string> = {}): { line: string; value: number }[] {
  return body
    .split("\n")
    .filter((l) => l.startsWith(prefix) && Object.entries(labels).every(([k, v]) => l.includes(`${k}="${v}"`)))
    .map((line) => ({ line, value: Number(line.slice(line.lastIndexOf(" ") + 1)) }));
}

describe("observability - metrics in containerd's shape", () => {
  let s: Stack;
  let rootfs: string;

  before(async () => {
    s = await startStack({ metrics: true });
    rootfs = busyboxRootfs(path.join(s.dir, "rootfs"));
  });
  after(async () => {
    await s?.ctr(["t", "kill", "-s", "SIGKILL", "metered"]).catch(() => undefined);
    await stopStackAndCleanup(s);
  });

  it("serves a running container's cgroup CPU, memory and pids on the tasks process's /v1/metrics (and /metrics)", async () => {
    const run = await s.ctr(["run", "-d", ...rootfsArgs(rootfs), "metered", "sh", "-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; sleep 1000"]);
    assert.equal(run.code, 0, run.stderr);
    await waitTaskStatus(s, "metered", "RUNNING");
    const id = { container_id: "metered", namespace: "default" };
    const v1 = fs.existsSync("/sys/fs/cgroup/memory/memory.stat");
    const memory = v1 ? "container_memory_usage_usage_bytes{" : "container_memory_usage_bytes{";
    const cpu = v1 ? "container_cpu_total_nanoseconds{" : "container_cpu_usage_usec_microseconds{";
    const body = await waitFor("the container's cpu time", async () => {
      const r = await get(s.metricsAddress("tasks"), "/v1/metrics");
      assert.equal(r.status, 200);
      return series(r.body, cpu, id)[0]?.value ? r.body : undefined;
    }, 15000, 200);
    assert.ok(series(body, memory, id)[0]!.value > 0, "memory in use");
    const pids = series(body, "container_pids_current{", id);
    assert.equal(pids.length, 1);
    assert.ok(pids[0]!.value >= 1, pids[0]!.line);
    assert.equal(series(body, "container_pids_limit{", id).length, 1);
    assert.match(body, /^# TYPE container_memory_oom_total gauge$/m);
    // Every container_* series carries the container's id and namespace, and nothing else runs here.
    const all = series(body, "container_");
    assert.ok(all.length >= 40, `${all.length} container series`);
    for (const x of all) assert.match(x.line, /container_id="metered".*namespace="default"/);
    const families = new Set(all.map((x) => x.line.slice(0, x.line.indexOf("{"))));
    assert.ok(families.size >= 40, `${families.size} families`);
    const plain = await get(s.metricsAddress("tasks"), "/metrics");
    assert.equal(plain.status, 200);
    assert.ok(series(plain.body, memory, id).length === 1, "/metrics has them too");

    assert.equal((await s.ctr(["t", "kill", "-s", "SIGKILL", "metered"])).code, 0);
    await waitTaskStatus(s, "metered", "STOPPED");
    await waitFor("the stopped container's series to go", async () => (series((await get(s.metricsAddress("tasks"), "/v1/metrics")).body, "container_", id).length === 0 ? true : undefined), 5000, 200);
    assert.equal((await s.ctr(["t", "rm", "metered"])).code, 0);
    assert.equal((await s.ctr(["c", "rm", "metered"])).code, 0);
  });

  it("labels codes as go-grpc-prometheus does, and a forwarded call is counted by its owner alone", async () => {
    const key = { grpc_service: "containerd.services.containers.v1.Containers", grpc_method: "Get" };
    const count = async (svc: ServiceName, prefix: string, labels: Record<string, string>): Promise<number> =>
      series((await get(s.metricsAddress(svc), "/v1/metrics")).body, prefix, labels).reduce((n, x) => n + x.value, 0);
    const before = await Promise.all(SERVICES.map((svc) => count(svc, "grpc_server_handled_total{", { ...key, grpc_code: "NotFound" })));
    const r = await s.ctr(["c", "info", "no-such-container"]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /not found/);
    const after = await Promise.all(SERVICES.map((svc) => count(svc, "grpc_server_handled_total{", { ...key, grpc_code: "NotFound" })));
    const delta = Object.fromEntries(SERVICES.map((svc, i) => [svc, after[i]! - before[i]!]));
    assert.deepEqual(delta, { content: 0, snapshots: 0, images: 0, tasks: 1, transfer: 0, sandbox: 0, gateway: 0 }, "counted once, by the owner");
    assert.ok((await count("tasks", "grpc_server_started_total{", { ...key, grpc_type: "unary" })) >= 1);
    assert.ok((await count("tasks", "grpc_server_msg_received_total{", { ...key, grpc_type: "unary" })) >= 1);
    const tasks = (await get(s.metricsAddress("tasks"), "/v1/metrics")).body;
    assert.doesNotMatch(tasks, /grpc_code="(NOT_FOUND|OK_|CANCELLED|ALREADY_EXISTS)"/);
    assert.match(tasks, /grpc_server_handled_total\{[^}]*grpc_service="containerd.services.tasks.v1.Tasks",grpc_method="Create",grpc_type="unary",grpc_code="OK"/);
    // The gateway still counts what it serves itself.
    const v = await s.ctr(["version"]);
    assert.equal(v.code, 0, v.stderr);
    assert.ok((await count("gateway", "grpc_server_handled_total{", { grpc_service: "containerd.services.version.v1.Version", grpc_code: "OK" })) >= 1);
  });
});
