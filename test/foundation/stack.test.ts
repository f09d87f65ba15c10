/**
 * Issue 2 acceptance: the whole stack from `bin/flotilla up`, driven with the real ctr, a plain NATS
 * subscriber and an OTLP receiver.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as grpc from "@grpc/grpc-js";
import { connect, type NatsConnection } from "nats";
import { decodeEnvelope, type Envelope } from "#libs/events";
import { decode, encode } from "#libs/proto";
import { grpcTarget } from "#libs/config";
import { startNats, startStack, waitFor, sleep, type Stack } from "../harness";
import { startOtlpReceiver, type ReceivedSpan } from "../helpers/otlp";

const SERVICES = ["content", "snapshots", "images", "tasks", "transfer", "sandbox", "gateway"] as const;
const identity = (b: Buffer): Buffer => b;

function rawCall(socket: string, path: string, body: Buffer, md = new grpc.Metadata()): Promise<{ code: number; details: string; body?: Buffer }> {
  const c = new grpc.Client(grpcTarget(socket), grpc.credentials.createInsecure());
  return new Promise((resolve) => {
    c.makeUnaryRequest(path, identity, identity, body, md, { deadline: Date.now() + 10000 }, (err, res) => {
      c.close();
      resolve(err ? { code: err.code, details: err.details } : { code: 0, details: "", body: res });
    });
  });
}

/** Parse `ctr events` lines: `<date> <time> <tz> <tzname> <namespace> <topic> <json>`. */
function parseEvents(out: string): { ns: string; topic: string; json: Record<string, unknown> }[] {
  return out.split("\n").filter(Boolean).map((l) => {
    const parts = l.split(" ");
    return { ns: parts[4]!, topic: parts[5]!, json: JSON.parse(parts.slice(6).join(" ") || "{}") };
  });
}

describe("foundation: the stack with the real ctr", () => {
  let stack: Stack;
  let nats: Awaited<ReturnType<typeof startNats>>;
  let otlp: Awaited<ReturnType<typeof startOtlpReceiver>>;
  let nc: NatsConnection;
  const natsEnvelopes: { subject: string; env: Envelope }[] = [];

  before(async () => {
    nats = await startNats();
    otlp = await startOtlpReceiver();
    stack = await startStack({ natsUrl: nats.url, otlpEndpoint: otlp.endpoint, metrics: true });
    nc = await connect({ servers: nats.url, reconnect: true, maxReconnectAttempts: -1, reconnectTimeWait: 200 });
    nc.subscribe("flotilla.events.>", { callback: (_e, m) => natsEnvelopes.push({ subject: m.subject, env: decodeEnvelope(m.data) }) });
    await nc.flush();
  });

  after(async () => {
    await nc?.close().catch(() => undefined);
    await stack?.stop();
    await nats?.stop();
    await otlp?.close();
  });

  test("one process per service and the gateway, each its own PID", () => {
    const pids = new Set<number>();
    for (const s of SERVICES) {
      const pid = stack.pidOf(s);
      assert.ok(pid, `${s} has a pid`);
      const cmd = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").join(" ");
      assert.match(cmd, new RegExp(`dist/services/${s}/main\\.js`), `${s} runs its own main`);
      pids.add(pid);
    }
    assert.equal(pids.size, SERVICES.length);
  });

  test("ctr version shows the server version and a persisted UUID", async () => {
    const r = await stack.ctr(["version"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /Server:\s+Version:\s+v1\.6\.20\+flotilla/);
    const uuid = /UUID: ([0-9a-f-]{36})/.exec(r.stdout)?.[1];
    assert.ok(uuid, r.stdout);
    assert.equal(fs.readFileSync(`${stack.root}/gateway/uuid`, "utf8").trim(), uuid);
  });

  test("ctr plugins ls lists the plugins of all six services", async () => {
    const r = await stack.ctr(["plugins", "ls"]);
    assert.equal(r.code, 0, r.stderr);
    const rows = r.stdout.trim().split("\n").slice(1).map((l) => l.trim().split(/\s+/));
    const has = (type: string, id: string): string[] | undefined => rows.find((x) => x[0] === type && x[1] === id);
    for (const [type, id] of [
      ["io.containerd.grpc.v1", "content"],
      ["io.containerd.grpc.v1", "snapshots"],
      ["io.containerd.grpc.v1", "namespaces"],
      ["io.containerd.grpc.v1", "tasks"],
      ["io.containerd.grpc.v1", "transfer"],
      ["io.containerd.grpc.v1", "sandboxes"],
      ["io.containerd.grpc.v1", "version"],
      ["io.containerd.grpc.v1", "introspection"],
      ["io.containerd.grpc.v1", "events"],
    ] as const) {
      assert.ok(has(type, id), `${type} ${id} listed:\n${r.stdout}`);
    }
    assert.equal(has("io.containerd.grpc.v1", "namespaces")!.at(-1), "ok");
    const f = await stack.ctr(["plugins", "ls", "id==namespaces"]);
    assert.equal(f.stdout.trim().split("\n").length, 2, f.stdout);
  });

  test("namespaces create, ls, label, rm", async () => {
    assert.equal((await stack.ctr(["namespaces", "create", "ns-one", "a=b", "c=d"])).code, 0);
    const dup = await stack.ctr(["namespaces", "create", "ns-one"]);
    assert.notEqual(dup.code, 0);
    assert.match(dup.stderr, /namespace "ns-one": already exists/);
    let ls = await stack.ctr(["namespaces", "ls"]);
    assert.match(ls.stdout, /ns-one\s+a=b,c=d/);
    assert.equal((await stack.ctr(["namespaces", "label", "ns-one", "a=", "e=f"])).code, 0);
    ls = await stack.ctr(["namespaces", "ls"]);
    assert.match(ls.stdout, /ns-one\s+c=d,e=f/);
    const q = await stack.ctr(["namespaces", "ls", "-q"]);
    assert.ok(q.stdout.split("\n").includes("ns-one"));
    const rm = await stack.ctr(["namespaces", "rm", "ns-one"]);
    assert.equal(rm.code, 0, rm.stderr);
    assert.equal(rm.stdout.trim(), "ns-one");
    ls = await stack.ctr(["namespaces", "ls", "-q"]);
    assert.ok(!ls.stdout.split("\n").includes("ns-one"));
    const again = await stack.ctr(["namespaces", "rm", "ns-one"]);
    assert.equal(again.code, 0, "rm of a missing namespace still exits 0, as with containerd");
  });

  test("ctr events and a plain NATS subscriber receive the same envelopes", async () => {
    const ev = stack.ctrSpawn(["events"]);
    let out = "";
    ev.stdout!.on("data", (b: Buffer) => (out += b.toString()));
    try {
      await sleep(500); // let the subscription reach NATS
      natsEnvelopes.length = 0;
      await stack.ctr(["namespaces", "create", "ev-ns", "k=v"]);
      await stack.ctr(["namespaces", "label", "ev-ns", "k=w"]);
      await stack.ctr(["namespaces", "rm", "ev-ns"]);
      const lines = await waitFor("three events on ctr events", () => {
        const l = parseEvents(out).filter((e) => (e.json as { name?: string }).name === "ev-ns");
        return l.length >= 3 ? l : undefined;
      });
      assert.deepEqual(lines.map((l) => l.topic), ["/namespaces/create", "/namespaces/update", "/namespaces/delete"]);
      assert.deepEqual(lines[0]!.json, { name: "ev-ns", labels: { k: "v" } });
      assert.equal(lines[0]!.ns, "default", "envelope namespace is the caller's, as containerd does");
      const seen = await waitFor("three envelopes on NATS", () => {
        const e = natsEnvelopes.filter((x) => x.env.topic.startsWith("/namespaces/"));
        return e.length >= 3 ? e : undefined;
      });
      assert.deepEqual(seen.map((s) => s.subject), ["flotilla.events.default.namespaces.create", "flotilla.events.default.namespaces.update", "flotilla.events.default.namespaces.delete"]);
      const created = seen[0]!.env;
      assert.equal(created.event.type_url, "containerd.events.NamespaceCreate");
      assert.deepEqual(decode("containerd.events.NamespaceCreate", created.event.value), { name: "ev-ns", labels: { k: "v" } });
      // filters: only update events
      const fev = stack.ctrSpawn(["events", 'topic=="/namespaces/update"']);
      let fout = "";
      fev.stdout!.on("data", (b: Buffer) => (fout += b.toString()));
      await sleep(500);
      await stack.ctr(["namespaces", "create", "ev-two"]);
      await stack.ctr(["namespaces", "label", "ev-two", "x=y"]);
      await waitFor("filtered event", () => (fout.includes("ev-two") ? true : undefined));
      await sleep(200);
      assert.deepEqual(parseEvents(fout).map((e) => e.topic), ["/namespaces/update"]);
      fev.kill("SIGKILL");
      await stack.ctr(["namespaces", "rm", "ev-two"]);
    } finally {
      ev.kill("SIGKILL");
    }
  });

  test("bad input gets clear errors and crashes nothing", async () => {
    const before = SERVICES.map((s) => stack.pidOf(s));
    const unknownMethod = await rawCall(stack.socket, "/containerd.services.namespaces.v1.Namespaces/Bogus", Buffer.alloc(0));
    assert.equal(unknownMethod.code, grpc.status.UNIMPLEMENTED);
    const unknownService = await rawCall(stack.socket, "/containerd.services.bogus.v1.Bogus/Get", Buffer.alloc(0));
    assert.equal(unknownService.code, grpc.status.UNIMPLEMENTED);
    const malformed = await rawCall(stack.socket, "/containerd.services.namespaces.v1.Namespaces/Get", Buffer.from([0x0a, 0xff, 0xff, 0xff, 0x0f]));
    assert.equal(malformed.code, grpc.status.INVALID_ARGUMENT, malformed.details);
    const badName = await stack.ctr(["namespaces", "create", "bad name!"]);
    assert.notEqual(badName.code, 0);
    assert.match(badName.stderr, /invalid argument/);
    const md = new grpc.Metadata();
    md.set("containerd-namespace", "bad namespace");
    const pub = await rawCall(stack.socket, "/containerd.services.events.v1.Events/Publish",
      encode("containerd.services.events.v1.PublishRequest", { topic: "/x/y", event: { type_url: "containerd.events.NamespaceDelete", value: encode("containerd.events.NamespaceDelete", { name: "x" }) } }), md);
    assert.equal(pub.code, grpc.status.INVALID_ARGUMENT, pub.details);
    const noNs = await rawCall(stack.socket, "/containerd.services.events.v1.Events/Publish",
      encode("containerd.services.events.v1.PublishRequest", { topic: "/x/y", event: { type_url: "containerd.events.NamespaceDelete", value: Buffer.alloc(0) } }));
    assert.equal(noNs.code, grpc.status.FAILED_PRECONDITION, noNs.details);
    const oversized = await rawCall(stack.socket, "/containerd.services.namespaces.v1.Namespaces/Get", encode("containerd.services.namespaces.v1.GetNamespaceRequest", { name: "x".repeat(17 * 1024 * 1024) }));
    assert.equal(oversized.code, grpc.status.RESOURCE_EXHAUSTED);
    assert.deepEqual(SERVICES.map((s) => stack.pidOf(s)), before);
    assert.equal((await stack.ctr(["version"])).code, 0);
  });

  test("kill -9 a service: only its calls fail, the supervisor restarts it, nothing acknowledged is lost", async () => {
    assert.equal((await stack.ctr(["namespaces", "create", "survivor"])).code, 0);
    const sup = JSON.parse(fs.readFileSync(`${stack.state}/supervisor.json`, "utf8")).pid as number;
    process.kill(sup, "SIGSTOP"); // hold restarts so the outage is observable
    let old: number;
    try {
      old = stack.kill("images", "SIGKILL");
      await waitFor("images to die", () => {
        // the supervisor is stopped, so the dead child stays a zombie until it resumes
        const st = fs.existsSync(`/proc/${old}/stat`) ? fs.readFileSync(`/proc/${old}/stat`, "utf8") : "";
        return st === "" || /\) Z /.test(st) ? true : undefined;
      });
      const down = await stack.ctr(["namespaces", "ls"]);
      assert.notEqual(down.code, 0);
      assert.match(down.stderr, /unavailable/i);
      assert.equal((await stack.ctr(["version"])).code, 0, "the gateway's own calls still work");
      const plugins = await stack.ctr(["plugins", "ls", "id==namespaces"]);
      assert.match(plugins.stdout, /namespaces\s+-\s+error/);
    } finally {
      process.kill(sup, "SIGCONT");
    }
    await stack.waitRestarted("images", old!);
    // the gateway's channel to images reconnects within its backoff (at most 1 s)
    const ls = await waitFor("the gateway to reach images again", async () => {
      const r = await stack.ctr(["namespaces", "ls", "-q"]);
      return r.code === 0 ? r : undefined;
    }, 10000, 200);
    assert.ok(ls.stdout.split("\n").includes("survivor"));
    await stack.ctr(["namespaces", "rm", "survivor"]);
  });

  test("NATS down: RPCs still work; events resume when NATS returns", async () => {
    const ev = stack.ctrSpawn(["events"]);
    let out = "";
    ev.stdout!.on("data", (b: Buffer) => (out += b.toString()));
    try {
      await sleep(500);
      const port = nats.port;
      await nats.stop();
      const r = await stack.ctr(["namespaces", "create", "while-nats-down"]);
      assert.equal(r.code, 0, r.stderr);
      nats = await startNats(port);
      let i = 0;
      await waitFor("events to flow again", async () => {
        await stack.ctr(["namespaces", "create", `after-nats-${i++}`]);
        return /after-nats-/.test(out) ? true : undefined;
      }, 30000, 500);
      for (let j = 0; j < i; j++) await stack.ctr(["namespaces", "rm", `after-nats-${j}`]);
      await stack.ctr(["namespaces", "rm", "while-nats-down"]);
    } finally {
      ev.kill("SIGKILL");
    }
  });

  test("one trace follows a ctr call through the gateway into the owning service", async () => {
    assert.equal((await stack.ctr(["namespaces", "ls"])).code, 0);
    const name = "containerd.services.namespaces.v1.Namespaces/List";
    const found = await waitFor("spans from gateway and images", () => {
      const gw = otlp.spans.filter((s) => s.service === "flotilla-gateway" && s.name === name && s.kind === 2);
      for (const g of gw) {
        const child = otlp.spans.find((s: ReceivedSpan) => s.service === "flotilla-images" && s.name === name && s.traceId === g.traceId && s.parentSpanId === g.spanId);
        if (child) return { g, child };
      }
      return undefined;
    }, 20000, 200);
    assert.equal(found.child.traceId, found.g.traceId);
  });

  test("every process exports Prometheus metrics with per-RPC counts", async () => {
    for (const s of SERVICES) {
      const res = await fetch(`http://${stack.metricsAddress(s)}/metrics`);
      assert.equal(res.status, 200);
      const body = await res.text();
      assert.match(body, /process_cpu_user_seconds_total/, s);
    }
    const body = await (await fetch(`http://${stack.metricsAddress("images")}/metrics`)).text();
    assert.match(body, /grpc_server_handled_total\{[^}]*grpc_method="List"[^}]*grpc_code="OK"/);
    assert.match(body, /grpc_server_handling_seconds_bucket/);
  });
});

describe("foundation: flotilla up with its own nats-server", () => {
  test("starts nats-server itself and stops everything on SIGTERM", async () => {
    const stack = await startStack();
    const natsPid = stack.pidOf("nats")!;
    const pids = SERVICES.map((s) => stack.pidOf(s)!);
    try {
      assert.ok(natsPid);
      assert.match(fs.readFileSync(`/proc/${natsPid}/cmdline`, "utf8"), /nats-server/);
      assert.match(fs.readFileSync(`/proc/${natsPid}/cmdline`, "utf8").split("\0").join(" "), /-js/);
      assert.equal((await stack.ctr(["namespaces", "create", "embedded"])).code, 0);
    } finally {
      await stack.stop();
    }
    for (const pid of [natsPid, ...pids]) {
      assert.throws(() => process.kill(pid, 0), `pid ${pid} is gone`);
    }
  });
});
