/**
 * Issue 14's acceptance, as a subscriber sees it: a durable JetStream consumer follows the stack's
 * stream while the real `ctr` pulls, runs, execs and removes in two namespaces, nats-server is killed
 * (kill -9) and restarted three times on the same port and JetStream store, and one service (images)
 * is killed once with events still in its outbox. Every event of every acknowledged change arrives
 * exactly once, in order per namespace (for one process's events); `ctr events` sees events again
 * once NATS is back, and (the gateway's Events.Subscribe following the stream) every event of the
 * changes made from the first crash on exactly once, on a `ctr events` with no filter and on one
 * filtered to a namespace; `bin/flotilla events --from 1` replays all of it; the outbox depth metric
 * grows while NATS is down and drains to 0.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { AckPolicy, connect, DeliverPolicy, type NatsConnection } from "nats";
import { decodeEnvelope, type Envelope } from "#libs/events";
import { streamName } from "#libs/outbox";
import { unpackAny } from "#libs/proto";
import type { ServiceName } from "#libs/config";
import { startNats, startStack, waitFor, sleep, type Stack } from "../harness";
import { buildBusyboxImage, startRegistry, type BuiltImage, type Registry } from "../images/registry";
import { EventsWatcher, stopStackAndCleanup, waitTaskStatus, type EventLine } from "../tasks/helpers";
import { flotilla } from "../helpers/flotilla";

const PREFIX = "flotilla.events";
const STREAM = streamName(PREFIX);
const SERVICES: ServiceName[] = ["content", "snapshots", "images", "tasks", "transfer", "sandbox", "gateway"];

interface Received {
  seq: number;
  msgId: string;
  env: Envelope;
  body: Record<string, unknown>;
}

/** What the test expects: one event, identified by topic, namespace and a few of its fields. */
interface Expected {
  ns: string;
  topic: string;
  match: Record<string, string>;
}

describe("events outbox: nothing lost across NATS and service restarts", { timeout: 170_000 }, () => {
  let nats: Awaited<ReturnType<typeof startNats>>;
  let natsPort = 0;
  let jsDir = "";
  let stack: Stack;
  let reg: Registry;
  let img: BuiltImage;
  let image = "";
  let sub: NatsConnection;
  const received = new Map<number, Received>();
  let consuming: Promise<void> | undefined;
  let stopConsumer: (() => void) | undefined;
  const expected: Expected[] = [];

  before(async () => {
    jsDir = fs.mkdtempSync(path.join(os.tmpdir(), "flt-js-"));
    nats = await startNats(undefined, jsDir);
    natsPort = nats.port;
    reg = await startRegistry();
    img = buildBusyboxImage({ tag: "outbox" });
    await reg.push("test/busybox", "outbox", img);
    image = `${reg.host}/test/busybox:outbox`;
    stack = await startStack({ natsUrl: nats.url, metrics: true });
    // A subscriber that must not miss anything: a durable consumer on the stream the stack made.
    sub = await connect({ servers: nats.url, maxReconnectAttempts: -1, reconnectTimeWait: 200 });
    const jsm = await sub.jetstreamManager();
    await waitFor("the events stream", async () => (await jsm.streams.info(STREAM).catch(() => undefined)) ? true : undefined, 20000);
    await jsm.consumers.add(STREAM, { durable_name: "acceptance", ack_policy: AckPolicy.Explicit, deliver_policy: DeliverPolicy.All });
    const consumer = await sub.jetstream().consumers.get(STREAM, "acceptance");
    const msgs = await consumer.consume({ max_messages: 256, expires: 2000 });
    stopConsumer = () => void msgs.close();
    consuming = (async () => {
      for await (const m of msgs) {
        // A redelivery (an ack lost with NATS) is the same stream message: kept once, by its sequence.
        if (!received.has(m.seq)) {
          const env = decodeEnvelope(m.data);
          received.set(m.seq, { seq: m.seq, msgId: m.headers?.get("Nats-Msg-Id") ?? "", env, body: unpackAny(env.event) });
        }
        m.ack();
      }
    })();
  });

  after(async () => {
    stopConsumer?.();
    await consuming?.catch(() => undefined);
    await sub?.close().catch(() => undefined);
    await stopStackAndCleanup(stack);
    await nats?.stop();
    await reg?.stop();
    fs.rmSync(jsDir, { recursive: true, force: true });
  });

  const ctr = async (ns: string, args: string[]): Promise<void> => {
    const r = await stack.ctr(args, { namespace: ns, timeoutMs: 60000 });
    assert.equal(r.code, 0, `ctr -n ${ns} ${args.join(" ")}: ${r.stderr}`);
  };

  const depth = async (s: ServiceName): Promise<number> => {
    const text = await (await fetch(`http://${stack.metricsAddress(s)}/metrics`)).text();
    const m = /^flotilla_events_outbox_depth(?:\{[^}]*\})? (\d+)/m.exec(text);
    return m ? Number(m[1]) : -1;
  };
  const totalDepth = async (): Promise<number> => (await Promise.all(SERVICES.map(depth))).reduce((a, b) => a + b, 0);

  const natsDown = async (): Promise<void> => {
    await nats.stop();
  };
  const natsUp = async (): Promise<void> => {
    nats = await startNats(natsPort, jsDir);
  };

  const pull = async (ns: string): Promise<void> => {
    await ctr(ns, ["images", "pull", "--plain-http", image]);
    expected.push({ ns, topic: "/images/create", match: { name: image } });
    for (const d of new Set([img.root, ...img.manifests, img.manifest, img.config, ...img.layers].map((b) => b.digest))) expected.push({ ns, topic: "/content/create", match: { digest: d } });
  };

  const runRm = async (ns: string, id: string): Promise<void> => {
    await ctr(ns, ["run", "--rm", image, id, "true"]);
    for (const [topic, match] of [
      ["/containers/create", { id }], ["/snapshot/prepare", { key: id }], ["/tasks/create", { container_id: id }], ["/tasks/start", { container_id: id }],
      ["/tasks/exit", { container_id: id }], ["/tasks/delete", { container_id: id }], ["/containers/delete", { id }], ["/snapshot/remove", { key: id }],
    ] as const) expected.push({ ns, topic, match });
  };

  const execs = async (ns: string, id: string): Promise<void> => {
    await ctr(ns, ["run", "-d", image, id, "sleep", "60"]);
    for (const [topic, match] of [["/containers/create", { id }], ["/snapshot/prepare", { key: id }], ["/tasks/create", { container_id: id }], ["/tasks/start", { container_id: id }]] as const) {
      expected.push({ ns, topic, match });
    }
    for (const e of ["x1", "x2"]) {
      await ctr(ns, ["task", "exec", "--exec-id", e, id, "true"]);
      expected.push({ ns, topic: "/tasks/exec-added", match: { container_id: id, exec_id: e } }, { ns, topic: "/tasks/exec-started", match: { container_id: id, exec_id: e } });
      expected.push({ ns, topic: "/tasks/exit", match: { container_id: id, id: e } });
    }
    await ctr(ns, ["task", "kill", "-s", "SIGKILL", id]);
    await waitTaskStatus(stack, id, "STOPPED", ns);
    await ctr(ns, ["task", "rm", id]);
    await ctr(ns, ["containers", "rm", id]);
    for (const [topic, match] of [["/tasks/exit", { container_id: id, id }], ["/tasks/delete", { container_id: id }], ["/containers/delete", { id }], ["/snapshot/remove", { key: id }]] as const) {
      expected.push({ ns, topic, match });
    }
  };

  const tag = async (ns: string, name: string): Promise<void> => {
    await ctr(ns, ["images", "tag", image, name]);
    expected.push({ ns, topic: "/images/create", match: { name } });
  };
  const untag = async (ns: string, name: string): Promise<void> => {
    await ctr(ns, ["images", "rm", name]);
    expected.push({ ns, topic: "/images/delete", match: { name } });
  };

  it("every acknowledged change's event arrives once, in order, through three NATS crashes and a service crash", async () => {
    const watcher = new EventsWatcher(stack);
    const onlyEa = new EventsWatcher(stack, ["namespace==ea"]);
    let fromCrash1 = 0;
    try {
      await watcher.ready();
      // With NATS up: pulls (content, images, snapshots).
      await Promise.all(["ea", "eb"].map((ns) => pull(ns)));
      fromCrash1 = expected.length;

      // Crash 1: NATS killed under load; the outbox holds the events, its depth grows, then drains.
      await natsDown();
      await Promise.all(["ea", "eb"].map(async (ns) => {
        for (let i = 0; i < 3; i++) await runRm(ns, `${ns}-r${i}`);
      }));
      assert.ok((await depth("tasks")) > 0, "the tasks process's outbox holds the events while NATS is down");
      // The gateway frozen while NATS comes back and the other outboxes drain: those events reach the
      // stream before the gateway's NATS connection is back, and `ctr events` must get them all the same.
      const gateway = stack.pidOf("gateway")!;
      process.kill(gateway, "SIGSTOP");
      try {
        await natsUp();
        const others = SERVICES.filter((s) => s !== "gateway");
        await waitFor("the outboxes to drain", async () => ((await Promise.all(others.map(depth))).every((d) => d === 0) ? true : undefined), 30000, 200);
      } finally {
        process.kill(gateway, "SIGCONT");
      }
      await waitFor("the outboxes to drain", async () => ((await totalDepth()) === 0 ? true : undefined), 30000, 200);

      // Crash 2: NATS killed, images records tags, then is killed itself (restarted by the supervisor)
      // with its events still in its outbox.
      await natsDown();
      await Promise.all(["ea", "eb"].map((ns) => tag(ns, `${reg.host}/test/tagged:${ns}`)));
      assert.ok((await depth("images")) >= 2);
      const old = stack.kill("images", "SIGKILL");
      await stack.waitRestarted("images", old, 30000);
      await Promise.all(["ea", "eb"].map((ns) => untag(ns, `${reg.host}/test/tagged:${ns}`)));
      await natsUp();

      // Crash 3: NATS killed while execs and runs go on, and started again in the middle of them.
      await natsDown();
      const load = Promise.all(["ea", "eb"].map(async (ns) => {
        await execs(ns, `${ns}-x`);
        for (let i = 3; i < 5; i++) await runRm(ns, `${ns}-r${i}`);
      }));
      await sleep(1500);
      await natsUp();
      await load;
      await waitFor("the outboxes to drain", async () => ((await totalDepth()) === 0 ? true : undefined), 30000, 200);

      // `ctr events` (the gateway following the stream) sees new events now that NATS is back.
      const seenBefore = watcher.lines.length;
      await waitFor("ctr events to see events again", async () => {
        const r = await stack.ctr(["namespaces", "label", "ec", `n=${Date.now()}`]);
        assert.equal(r.code, 0, r.stderr);
        return watcher.lines.some((l) => l.topic === "/namespaces/update" && l.json.name === "ec") ? true : undefined;
      }, 30000, 500).catch((e: Error) => {
        throw new Error(`${e.message}: ctr events printed ${seenBefore} lines before, ${watcher.lines.length} now: ${JSON.stringify(watcher.lines.slice(-3))}`);
      });

      // Both `ctr events` saw every event of the changes made while NATS was down or coming back, once
      // (the gateway's ordered consumer resumed after the last sequence it had delivered).
      const later = expected.slice(fromCrash1);
      const onLines = (lines: EventLine[], e: Expected): number => lines.filter((l) => l.ns === e.ns && l.topic === e.topic && Object.entries(e.match).every(([k, v]) => String(l.json[k] ?? "") === v)).length;
      await waitFor("ctr events to print every event of the changes made across the crashes", async () => (later.every((e) => onLines(watcher.lines, e) >= 1) && later.every((e) => e.ns !== "ea" || onLines(onlyEa.lines, e) >= 1) ? true : undefined), 30000, 250).catch((e: Error) => {
        const missing = later.filter((x) => onLines(watcher.lines, x) === 0).slice(0, 5);
        throw new Error(`${e.message}: missing ${JSON.stringify(missing)}`);
      });
      for (const e of later) assert.equal(onLines(watcher.lines, e), 1, `ctr events: ${e.ns} ${e.topic} ${JSON.stringify(e.match)}`);
      for (const e of later.filter((x) => x.ns === "ea")) assert.equal(onLines(onlyEa.lines, e), 1, `ctr events namespace==ea: ${e.ns} ${e.topic} ${JSON.stringify(e.match)}`);
      assert.deepEqual([...new Set(onlyEa.lines.map((l) => l.ns))], ["ea"], "the namespace-filtered ctr events prints that namespace only");
    } finally {
      watcher.stop();
      onlyEa.stop();
    }

    // The durable consumer has everything: wait until it has caught up with the stream.
    const jsm = await sub.jetstreamManager();
    await waitFor("the consumer to catch up", async () => {
      const info = await jsm.consumers.info(STREAM, "acceptance").catch(() => undefined);
      return info && info.num_pending === 0 && received.size >= (await jsm.streams.info(STREAM)).state.messages ? true : undefined;
    }, 30000, 250);
    const all = [...received.values()].sort((a, b) => a.seq - b.seq);
    assert.ok(expected.length > 100, `${expected.length} events expected`);
    assert.ok(all.length >= expected.length, `${all.length} events received, ${expected.length} expected`);

    // No event was stored twice.
    const ids = all.map((r) => r.msgId);
    assert.ok(ids.every(Boolean), "every message carries its Nats-Msg-Id");
    assert.equal(new Set(ids).size, ids.length, "no message id stored twice");

    // Every expected event, exactly once.
    const matches = (r: Received, e: Expected): boolean => r.env.namespace === e.ns && r.env.topic === e.topic && Object.entries(e.match).every(([k, v]) => String(r.body[k] ?? "") === v);
    for (const e of expected) {
      const found = all.filter((r) => matches(r, e));
      assert.equal(found.length, 1, `${e.ns} ${e.topic} ${JSON.stringify(e.match)}: ${found.length} times`);
    }

    // In order per namespace: one process's events (the tasks process's, whatever path they took) keep
    // the order of the changes, container after container.
    for (const ns of ["ea", "eb"]) {
      const who = (r: Received): string => String((r.env.topic === "/tasks/exit" ? r.body.id : r.body.container_id || r.body.id) ?? "");
      const seen = all.filter((r) => r.env.namespace === ns && /^\/(containers|tasks)\//.test(r.env.topic)).map((r) => `${r.env.topic} ${who(r)}`);
      const want: string[] = [];
      for (const id of [0, 1, 2].map((i) => `${ns}-r${i}`)) {
        want.push(`/containers/create ${id}`, `/tasks/create ${id}`, `/tasks/start ${id}`, `/tasks/exit ${id}`, `/tasks/delete ${id}`, `/containers/delete ${id}`);
      }
      const x = `${ns}-x`;
      want.push(`/containers/create ${x}`, `/tasks/create ${x}`, `/tasks/start ${x}`);
      for (const e of ["x1", "x2"]) want.push(`/tasks/exec-added ${x}`, `/tasks/exec-started ${x}`, `/tasks/exit ${e}`);
      want.push(`/tasks/exit ${x}`, `/tasks/delete ${x}`, `/containers/delete ${x}`);
      for (const id of [3, 4].map((i) => `${ns}-r${i}`)) {
        want.push(`/containers/create ${id}`, `/tasks/create ${id}`, `/tasks/start ${id}`, `/tasks/exit ${id}`, `/tasks/delete ${id}`, `/containers/delete ${id}`);
      }
      assert.deepEqual(seen, want, `the tasks process's events in ${ns}, in stream order`);
    }

    // A subscriber started after the load replays all of it from the stream.
    const replay = await flotilla(["events", "--from", "1", "-c", stack.configFile], { timeoutMs: 60000 });
    assert.equal(replay.code, 0, replay.stderr);
    const lines = replay.stdout.split("\n").filter(Boolean).map((l) => l.split(" "));
    const last = (await jsm.streams.info(STREAM)).state.last_seq;
    const upTo = all.filter((r) => r.seq <= last);
    assert.equal(lines.length, upTo.length, "one line per stored event");
    assert.deepEqual(lines.map((p) => `${p[4]} ${p[5]}`), upTo.map((r) => `${r.env.namespace} ${r.env.topic}`));
    for (const p of lines) assert.match(`${p[0]} ${p[1]} ${p[2]} ${p[3]}`, /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)? \+0000 UTC$/);
  });
});
