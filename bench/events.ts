/**
 * Issue 14 benchmarks: the events outbox against events as they were before it. Two Flotilla stacks
 * run at once and take turns: one as built (the outbox: each event recorded in its change's
 * transaction, relayed to JetStream), one started with FLOTILLA_EVENTS_DIRECT=1 (every event handed
 * to core NATS after the change, fire-and-forget: the baseline). In the report's "containerd" column
 * stands that baseline.
 * - `ctr run --rm IMAGE id true` latency (goal: the outbox at most 5% slower: ratio <= 1.05);
 * - events per second end to end while starting 50 containers: from the first change acknowledged to
 *   the last of its events received, on a JetStream consumer (the outbox) or a core subscription (the
 *   baseline); and the median delay from calling `ctr run -d` to its /tasks/start event received.
 */
import * as fs from "node:fs";
import { connect, DeliverPolicy, type NatsConnection } from "nats";
import { decodeEnvelope } from "../libs/events";
import { streamName } from "../libs/outbox";
import { unpackAny } from "../libs/proto";
import type { Row } from "./lib";
import { startStack, type Stack } from "../test/harness";
import { startRegistry } from "../test/helpers/registry";
import { buildBusyboxImage, pushImage } from "../test/helpers/image";

const N = 50;
const PREFIX = "flotilla.events";

interface Side {
  name: string;
  stack: Stack;
  nc: NatsConnection;
  /** Receipt time (performance.now) of each event, and of each container's /tasks/start. */
  received: number[];
  started: Map<string, number>;
  stop(): Promise<void>;
}

const med = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function must(p: Promise<{ code: number; stderr: string }>): Promise<void> {
  const r = await p;
  if (r.code !== 0) throw new Error(r.stderr);
}

async function side(name: string, direct: boolean): Promise<Side> {
  if (direct) process.env.FLOTILLA_EVENTS_DIRECT = "1";
  let stack: Stack;
  try {
    stack = await startStack({ logLevel: "warn" });
  } finally {
    delete process.env.FLOTILLA_EVENTS_DIRECT;
  }
  const natsUrl = (JSON.parse(fs.readFileSync(`${stack.state}/supervisor.json`, "utf8")) as { nats_url: string }).nats_url;
  const nc = await connect({ servers: natsUrl });
  let closeConsumer = (): void => undefined;
  const s: Side = { name, stack, nc, received: [], started: new Map(), stop: async () => {
    closeConsumer();
    await nc.close();
    await stack.stop();
  } };
  const onEvent = (data: Uint8Array): void => {
    const now = performance.now();
    s.received.push(now);
    const env = decodeEnvelope(data);
    if (env.topic === "/tasks/start") s.started.set(String(unpackAny<{ container_id?: string }>(env.event).container_id), now);
  };
  if (direct) {
    nc.subscribe(`${PREFIX}.>`, { callback: (_e, m) => onEvent(m.data) });
  } else {
    const jsm = await nc.jetstreamManager();
    for (let i = 0; !(await jsm.streams.info(streamName(PREFIX)).catch(() => undefined)); i++) {
      if (i > 100) throw new Error("no events stream");
      await new Promise((r) => setTimeout(r, 100));
    }
    const c = await nc.jetstream().consumers.get(streamName(PREFIX), { deliver_policy: DeliverPolicy.New });
    const msgs = await c.consume();
    closeConsumer = () => void msgs.close();
    void (async () => {
      for await (const m of msgs) onEvent(m.data);
    })();
  }
  return s;
}

export async function run(): Promise<Row[]> {
  const reg = await startRegistry();
  const sides: Side[] = [];
  const ns = `bench-${process.pid}`;
  const ctr = (s: Side, args: string[]): ReturnType<Stack["ctr"]> => s.stack.ctr(args, { namespace: ns, timeoutMs: 120_000 });
  try {
    sides.push(await side("outbox", false), await side("direct", true));
    await pushImage(reg, "bench/busybox", "latest", buildBusyboxImage());
    const ref = `${reg.host}/bench/busybox:latest`;
    for (const s of sides) await must(ctr(s, ["images", "pull", "--plain-http", ref]));

    // ctr run --rm, taking turns.
    const runs = sides.map(() => [] as number[]);
    for (let i = 0; i < 17; i++) {
      for (let k = 0; k < sides.length; k++) {
        const t0 = performance.now();
        await must(ctr(sides[k]!, ["run", "--rm", ref, `r${i}`, "true"]));
        if (i >= 2) runs[k]!.push(performance.now() - t0);
      }
    }

    // 50 detached containers, taking turns, 5 at a time on each side.
    for (const s of sides) {
      s.received.length = 0;
      s.started.clear();
    }
    const called = sides.map(() => new Map<string, number>());
    const first = sides.map(() => 0);
    for (let b = 0; b < N; b += 5) {
      for (let k = 0; k < sides.length; k++) {
        if (!first[k]) first[k] = performance.now();
        await Promise.all(Array.from({ length: 5 }, async (_, j) => {
          const id = `d${b + j}`;
          called[k]!.set(id, performance.now());
          await must(ctr(sides[k]!, ["run", "-d", ref, id, "sleep", "100000"]));
        }));
      }
    }
    for (let w = 0; w < 300 && sides.some((s) => s.started.size < N); w++) await new Promise((r) => setTimeout(r, 100));
    const rate = sides.map((s, k) => s.received.length / ((Math.max(...s.received) - first[k]!) / 1000));
    const delay = sides.map((s, k) => med([...called[k]!].map(([id, t]) => (s.started.get(id) ?? NaN) - t).filter((x) => !Number.isNaN(x))));
    for (const s of sides) {
      await Promise.all(Array.from({ length: N }, (_, k) => ctr(s, ["t", "kill", "-s", "SIGKILL", `d${k}`])));
      for (let w = 0; w < 100 && /RUNNING/.test((await ctr(s, ["t", "ls"])).stdout); w++) await new Promise((r) => setTimeout(r, 100));
      for (let k = 0; k < N; k++) {
        await ctr(s, ["t", "rm", `d${k}`]);
        await ctr(s, ["c", "rm", `d${k}`]);
      }
    }
    return [
      { benchmark: "events: ctr run --rm, outbox vs no outbox (median of 15)", unit: "ms", flotilla: med(runs[0]!), containerd: med(runs[1]!), lowerIsBetter: true },
      { benchmark: `events: events/s end to end starting ${N} (JetStream vs core)`, unit: "ev/s", flotilla: rate[0]!, containerd: rate[1]!, lowerIsBetter: false },
      { benchmark: `events: run -d called to its /tasks/start received (median)`, unit: "ms", flotilla: delay[0]!, containerd: delay[1]!, lowerIsBetter: true },
    ];
  } finally {
    for (const s of sides) {
      const ls = await ctr(s, ["t", "ls", "-q"]).catch(() => undefined);
      for (const id of ls?.stdout.split("\n").map((x) => x.trim()).filter(Boolean) ?? []) {
        await ctr(s, ["t", "rm", "-f", id]).catch(() => undefined);
        await ctr(s, ["c", "rm", id]).catch(() => undefined);
      }
      await s.stop().catch(() => undefined);
    }
    await reg.stop();
  }
}
