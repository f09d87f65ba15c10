/**
 * Trace context on the shim's task events: every `/tasks/*` event published on NATS carries, in its
 * `traceparent` header, the trace of the call that caused it, as the other services' events do.
 * - With tracing exported, the real `ctr` (which sends no trace context) gets one from the gateway:
 *   the events of `ctr run --rm` and of exec, pause, resume, kill and rm on a detached container are
 *   matched against the gateway's spans of the Tasks calls that caused them.
 * - Without an exporter (the default), a client's own `traceparent` reaches the events unchanged.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import * as path from "node:path";
import { connect, type NatsConnection } from "nats";
import { ROOT_CONTEXT, trace, TraceFlags } from "@opentelemetry/api";
import { background } from "#libs/context";
import { decodeEnvelope } from "#libs/events";
import { decode } from "#libs/proto";
import { initTracing } from "#libs/tracing";
import { ContainerStoreProxy } from "#libs/clients/containers";
import { TaskServiceProxy } from "#libs/clients/tasks";
import { OCI_PROCESS_TYPE_URL, OCI_SPEC_TYPE_URL } from "#libs/core/containers";
import { startOtlpReceiver, type ReceivedSpan } from "../helpers/otlp";
import { sleep, startStack, testChannels, waitFor, type Stack } from "../harness";
import { busyboxRootfs, rootfsArgs, stopStackAndCleanup, waitTaskStatus } from "./helpers";

const SERVER = 2;
const TASKS = "containerd.services.tasks.v1.Tasks";

interface TaskEvent {
  topic: string;
  /** container_id, and the process (exec id, or the container id for its init) where the event names one. */
  container: string;
  process: string;
  traceId: string;
}

/** Every /tasks/* event on the stack's NATS, with the trace id of its `traceparent` header ("" without one). */
async function watchTaskEvents(stack: Stack): Promise<{ events: TaskEvent[]; close(): Promise<void> }> {
  const nc: NatsConnection = await connect({ servers: stack.natsUrl });
  const events: TaskEvent[] = [];
  nc.subscribe("flotilla.events.*.tasks.>", {
    callback: (_e, m) => {
      const env = decodeEnvelope(m.data);
      const ev = decode<Record<string, string>>(env.event.type_url, env.event.value);
      const tp = m.headers?.get("traceparent") ?? "";
      events.push({ topic: env.topic, container: ev.container_id ?? "", process: ev.exec_id || ev.id || ev.container_id || "", traceId: tp.split("-")[1] ?? "" });
    },
  });
  await nc.flush();
  return { events, close: () => nc.close() };
}

describe("tasks - task events carry the trace of the call that caused them (exported traces, real ctr)", () => {
  let stack: Stack;
  let otlp: Awaited<ReturnType<typeof startOtlpReceiver>>;
  let watch: Awaited<ReturnType<typeof watchTaskEvents>>;
  let rootfs: string;

  before(async () => {
    otlp = await startOtlpReceiver();
    stack = await startStack({ otlpEndpoint: otlp.endpoint });
    rootfs = busyboxRootfs(path.join(stack.dir, "rootfs"));
    watch = await watchTaskEvents(stack);
  });
  after(async () => {
    await watch?.close();
    await stopStackAndCleanup(stack);
    await otlp?.close();
  });

  /** Run a ctr command; the trace ids of the gateway's spans of the Tasks calls it made, by method. */
  const traced = async (args: string[], expectCode = 0): Promise<Map<string, string[]>> => {
    const seen = new Set(otlp.spans.map((x) => x.spanId));
    const r = await stack.ctr(args);
    assert.equal(r.code, expectCode, r.stderr);
    const fresh = (): ReceivedSpan[] => otlp.spans.filter((x) => !seen.has(x.spanId) && x.service === "flotilla-gateway" && x.kind === SERVER && x.name.startsWith(`${TASKS}/`));
    // Spans leave in batches: wait until those of this command's calls stop coming.
    let n = -1;
    await waitFor(`the spans of ctr ${args.join(" ")}`, async () => {
      const now = fresh().length;
      if (now > 0 && now === n) return true;
      n = now;
      await sleep(700);
      return undefined;
    }, 20000, 0);
    const out = new Map<string, string[]>();
    for (const x of fresh()) out.set(x.name.slice(TASKS.length + 1), [...(out.get(x.name.slice(TASKS.length + 1)) ?? []), x.traceId]);
    return out;
  };
  const only = (calls: Map<string, string[]>, method: string): string => {
    const ids = calls.get(method) ?? [];
    assert.equal(ids.length, 1, `one ${method} call: ${ids.length}`);
    return ids[0]!;
  };
  const eventsOf = async (container: string, topics: string[]): Promise<TaskEvent[]> => {
    await waitFor(`${container}'s ${topics.join(", ")}`, () => (topics.every((t) => watch.events.some((e) => e.container === container && e.topic === t)) ? true : undefined), 15000, 50);
    return watch.events.filter((e) => e.container === container);
  };

  test("ctr run --rm: create, start, exit and delete each carry their call's trace", async () => {
    const calls = await traced(["run", "--rm", ...rootfsArgs(rootfs), "tr1", "sh", "-c", "exit 3"], 3);
    const evs = await eventsOf("tr1", ["/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"]);
    assert.deepEqual(evs.map((e) => e.topic), ["/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"]);
    const byTopic = Object.fromEntries(evs.map((e) => [e.topic, e.traceId]));
    assert.equal(byTopic["/tasks/create"], only(calls, "Create"));
    assert.equal(byTopic["/tasks/start"], only(calls, "Start"));
    assert.equal(byTopic["/tasks/exit"], only(calls, "Start"), "the exit of a process that ended by itself: the trace of the Start that ran it");
    assert.equal(byTopic["/tasks/delete"], only(calls, "Delete"));
    assert.equal(new Set(Object.values(byTopic)).size, 3, "Create, Start and Delete are three traces");
  });

  test("exec, pause, resume, kill, rm: exec-added, exec-started, the exec's exit, paused, resumed, the kill's exit and delete", async () => {
    await traced(["run", "-d", ...rootfsArgs(rootfs), "tr2", "sleep", "1000"]);
    await waitTaskStatus(stack, "tr2", "RUNNING");
    const ex = await traced(["t", "exec", "--exec-id", "x1", "tr2", "sh", "-c", "exit 5"], 5);
    const execEvents = (await eventsOf("tr2", ["/tasks/exec-added", "/tasks/exec-started"])).filter((e) => e.process === "x1");
    await waitFor("the exec's exit", () => watch.events.find((e) => e.topic === "/tasks/exit" && e.container === "tr2" && e.process === "x1"), 15000, 50);
    const x = (topic: string): string => watch.events.find((e) => e.container === "tr2" && e.process === "x1" && e.topic === topic)!.traceId;
    assert.ok(execEvents.length >= 2);
    assert.equal(x("/tasks/exec-added"), only(ex, "Exec"));
    assert.equal(x("/tasks/exec-started"), only(ex, "Start"));
    assert.equal(x("/tasks/exit"), only(ex, "Start"));

    const pause = await traced(["t", "pause", "tr2"]);
    const resume = await traced(["t", "resume", "tr2"]);
    const kill = await traced(["t", "kill", "-s", "KILL", "tr2"]);
    const init = await eventsOf("tr2", ["/tasks/paused", "/tasks/resumed"]);
    await waitFor("tr2's exit", () => watch.events.find((e) => e.topic === "/tasks/exit" && e.container === "tr2" && e.process === "tr2"), 15000, 50);
    const rm = await traced(["t", "rm", "tr2"]);
    await eventsOf("tr2", ["/tasks/delete"]);
    const t = (topic: string): string => watch.events.find((e) => e.container === "tr2" && e.topic === topic && (topic !== "/tasks/exit" || e.process === "tr2"))!.traceId;
    assert.ok(init.length > 0);
    assert.equal(t("/tasks/paused"), only(pause, "Pause"));
    assert.equal(t("/tasks/resumed"), only(resume, "Resume"));
    assert.equal(t("/tasks/exit"), only(kill, "Kill"), "an exit caused by a kill carries the kill's trace");
    assert.equal(t("/tasks/delete"), only(rm, "Delete"));
    assert.equal((await stack.ctr(["c", "rm", "tr2"])).code, 0);
    // No /tasks/* event went out without a trace.
    assert.deepEqual(watch.events.filter((e) => !/^[0-9a-f]{32}$/.test(e.traceId)), []);
  });
});

describe("tasks - task events carry a client's own traceparent (no exporter)", () => {
  let stack: Stack;
  let watch: Awaited<ReturnType<typeof watchTaskEvents>>;
  let rootfs: string;

  before(async () => {
    // This process sends W3C trace context as any instrumented client does.
    initTracing("trace-events-test", "");
    stack = await startStack();
    rootfs = busyboxRootfs(path.join(stack.dir, "rootfs"));
    watch = await watchTaskEvents(stack);
  });
  after(async () => {
    await watch?.close();
    await stopStackAndCleanup(stack);
  });

  test("each call's trace id reaches the events it caused", async () => {
    const ns = background("tracens");
    let n = 0;
    const traceIds: string[] = [];
    /** A context carrying a trace of the client's own (a new trace id each time). */
    const call = (): typeof ns => {
      const traceId = (++n).toString(16).padStart(32, "a");
      traceIds.push(traceId);
      return { ...ns, trace: trace.setSpanContext(ROOT_CONTEXT, { traceId, spanId: "00f067aa0ba902b7", traceFlags: TraceFlags.SAMPLED }) };
    };
    const containers = new ContainerStoreProxy(testChannels.get(stack.socket));
    const tasks = new TaskServiceProxy(testChannels.get(stack.socket));
    const spec = {
      ociVersion: "1.0.2-dev",
      process: { user: { uid: 0, gid: 0 }, args: ["sleep", "1000"], env: ["PATH=/bin"], cwd: "/" },
      root: { path: rootfs },
      mounts: [{ destination: "/proc", type: "proc", source: "proc", options: ["nosuid", "noexec", "nodev"] }],
      linux: { cgroupsPath: "/tracens/tc1", namespaces: [{ type: "pid" }, { type: "ipc" }, { type: "uts" }, { type: "mount" }] },
    };
    await containers.create(ns, { id: "tc1", runtime: { name: "io.containerd.runc.v2" }, spec: { typeUrl: OCI_SPEC_TYPE_URL, value: Buffer.from(JSON.stringify(spec)) } });
    const io = { stdin: "", stdout: "", stderr: "", terminal: false };
    const cCreate = call();
    await tasks.create(cCreate, { containerId: "tc1", rootfs: [], io });
    const cStart = call();
    await tasks.start(cStart, "tc1");
    const cExec = call();
    await tasks.exec(cExec, "tc1", "e1", io, { typeUrl: OCI_PROCESS_TYPE_URL, value: Buffer.from(JSON.stringify({ ...spec.process, args: ["true"] })) });
    const cExecStart = call();
    await tasks.start(cExecStart, "tc1", "e1");
    assert.equal((await tasks.wait(ns, "tc1", "e1")).exitStatus, 0);
    await tasks.deleteProcess(ns, "tc1", "e1");
    const cKill = call();
    await tasks.kill(cKill, "tc1", 9);
    assert.equal((await tasks.wait(ns, "tc1")).exitStatus, 137);
    const cDelete = call();
    await tasks.delete(cDelete, "tc1");
    await containers.delete(ns, "tc1");

    const expected: [string, string, string][] = [
      ["/tasks/create", "tc1", traceIds[0]!],
      ["/tasks/start", "tc1", traceIds[1]!],
      ["/tasks/exec-added", "e1", traceIds[2]!],
      ["/tasks/exec-started", "e1", traceIds[3]!],
      ["/tasks/exit", "e1", traceIds[3]!],
      ["/tasks/exit", "tc1", traceIds[4]!],
      ["/tasks/delete", "tc1", traceIds[5]!],
    ];
    await waitFor("tc1's delete event", () => watch.events.find((e) => e.topic === "/tasks/delete" && e.container === "tc1"), 15000, 50);
    const got = watch.events.filter((e) => e.container === "tc1").map((e) => [e.topic, e.process, e.traceId]);
    assert.deepEqual(got, expected);
  });
});
