/**
 * Traces through the real entry points: a `ctr run --rm` on a stack from `bin/flotilla up` exports (as
 * OTLP protobuf, the default) a trace that goes from the tasks process into the shim and on to runc,
 * client spans carry `rpc.grpc.status_code`, and `otlp_protocol = "http/json"` exports OTLP JSON.
 */
import * as assert from "node:assert/strict";
import * as path from "node:path";
import { after, before, describe, it } from "node:test";
import { background } from "#libs/context";
import { RpcClient } from "#libs/grpc/client";
import { startOtlpReceiver, type ReceivedSpan } from "../helpers/otlp";
import { sleep, startStack, waitFor, type Stack, testChannels } from "../harness";
import { busyboxRootfs, rootfsArgs, stopStackAndCleanup } from "../tasks/helpers";

const SERVER = 2;
const CLIENT = 3;

describe("observability - a ctr run trace reaches runc (OTLP protobuf)", () => {
  let s: Stack;
  let otlp: Awaited<ReturnType<typeof startOtlpReceiver>>;

  before(async () => {
    otlp = await startOtlpReceiver();
    s = await startStack({ otlpEndpoint: otlp.endpoint });
  });
  after(async () => {
    await stopStackAndCleanup(s);
    await otlp?.close();
  });

  it("has the shim's span under the tasks process's Create span, and runc create under the shim's", async () => {
    const rootfs = busyboxRootfs(path.join(s.dir, "rootfs"));
    const r = await s.ctr(["run", "--rm", ...rootfsArgs(rootfs), "traced", "sh", "-c", "exit 3"]);
    assert.equal(r.code, 3, r.stderr);
    const found = await waitFor("the Create trace down to runc", () => {
      for (const t of otlp.spans.filter((x) => x.service === "flotilla-tasks" && x.name === "containerd.services.tasks.v1.Tasks/Create" && x.kind === SERVER)) {
        const shim = otlp.spans.find((x) => x.service === "flotilla-shim" && x.traceId === t.traceId && x.parentSpanId === t.spanId && /^containerd\.task\.v[23]\.Task\/Create$/.test(x.name));
        const runc = shim && otlp.spans.find((x) => x.service === "flotilla-shim" && x.traceId === t.traceId && x.parentSpanId === shim.spanId && x.name === "runc create");
        if (runc) return { t, shim, runc };
      }
      return undefined;
    }, 20000, 200);
    assert.equal(found.shim.kind, SERVER);
    assert.equal(found.shim.attributes["rpc.system"], "ttrpc");
    assert.equal(found.shim.attributes["rpc.grpc.status_code"], 0);
    assert.equal(found.runc.kind, CLIENT);
    assert.equal(found.runc.attributes["process.exit.code"], 0);
    // The gateway's span is the root the tasks span hangs from.
    assert.ok(otlp.spans.some((x) => x.service === "flotilla-gateway" && x.spanId === found.t.parentSpanId && x.traceId === found.t.traceId));
    // The rest of the run reached the shim too (Start, Delete), each in its call's own trace.
    for (const m of ["Start", "Delete"]) {
      await waitFor(`the shim's ${m}`, () => otlp.spans.find((x) => x.service === "flotilla-shim" && x.name.endsWith(`/${m}`) && otlp.spans.some((t) => t.service === "flotilla-tasks" && t.spanId === x.parentSpanId)), 10000, 200);
    }
    assert.ok(otlp.spans.every((x) => x.contentType === "application/x-protobuf"), "spans come as OTLP protobuf by default");
  });

  it("client spans carry rpc.grpc.status_code", async () => {
    // The gateway's Health asks the owner with a gRPC client call: a client span with the owner's status.
    const health = new RpcClient(testChannels.get(s.socket), "grpc.health.v1.Health");
    await sleep(600); // past the gateway's brief reuse of an owner's answer
    const before = new Set(otlp.spans.map((x) => x.spanId));
    assert.equal((await health.unary(background(), "Check", { service: "containerd.services.leases.v1.Leases" })).status, 1);
    const call = await waitFor("the gateway's client span", () =>
      otlp.spans.find((x) => !before.has(x.spanId) && x.service === "flotilla-gateway" && x.kind === CLIENT && x.name === "grpc.health.v1.Health/Check"), 20000, 200);
    assert.equal(call.attributes["rpc.system"], "grpc");
    assert.equal(call.attributes["rpc.grpc.status_code"], 0);
    // Every client span has one.
    for (const c of otlp.spans.filter((x: ReceivedSpan) => x.kind === CLIENT && x.attributes["rpc.system"] === "grpc")) assert.equal(typeof c.attributes["rpc.grpc.status_code"], "number", `${c.service} ${c.name}`);
  });
});

describe("observability - otlp_protocol = \"http/json\"", () => {
  let s: Stack;
  let otlp: Awaited<ReturnType<typeof startOtlpReceiver>>;

  before(async () => {
    otlp = await startOtlpReceiver();
    s = await startStack({ otlpEndpoint: otlp.endpoint, otlpProtocol: "http/json" });
  });
  after(async () => {
    await s?.stop();
    await otlp?.close();
  });

  it("exports OTLP JSON", async () => {
    const r = await s.ctr(["namespaces", "ls"]);
    assert.equal(r.code, 0, r.stderr);
    await waitFor("the List spans", () => otlp.spans.find((x) => x.service === "flotilla-images" && x.name === "containerd.services.namespaces.v1.Namespaces/List"), 20000, 200);
    assert.ok(otlp.spans.length > 0);
    assert.ok(otlp.spans.every((x) => x.contentType === "application/json"), [...new Set(otlp.spans.map((x) => x.contentType))].join(","));
  });
});
