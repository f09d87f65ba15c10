/**
 * `flotilla events [--since TIME|--from SEQ] [--filter F]... [--follow]`: the events of the stack's
 * JetStream stream, printed as `ctr events` prints them (Go's time, namespace, topic, the event as
 * JSON). Without --since/--from it starts at the end of the stream (what `ctr events` shows); with one,
 * it replays from there and, without --follow, stops once it has caught up with the stream's end.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { parseArgs } from "node:util";
import { connect, type JsMsg } from "nats";
import { loadConfig, type Config } from "#libs/config";
import { decodeEnvelope, envelopeAdaptor, streamConsumer, type Envelope } from "#libs/events";
import { streamName } from "#libs/outbox";
import { parseAll } from "#libs/filters";
import { anyType, DECODE_OPTIONS } from "#libs/proto";
import { fromTimestamp } from "#libs/time";

const USAGE = `usage: flotilla events [--since TIME|--from SEQ] [--filter FILTER]... [--follow] [--nats URL]
  --since TIME    replay from this time (RFC 3339, e.g. 2026-12-07T23:00:00Z, or a duration ago: 10m)
  --from SEQ      replay from this stream sequence
  --filter F      containerd event filters (topic, namespace, event.<field>), as ctr events takes them
  --follow        keep printing new events (the default without --since/--from)
  --nats URL      the NATS server (default: [flotilla.nats] url, else the running stack's)
`;

/** The NATS server of the stack: the config's, else what `flotilla up` wrote in its state file. */
export function stackNatsUrl(cfg: Config): string {
  if (cfg.flotilla.nats.url) return cfg.flotilla.nats.url;
  try {
    const st = JSON.parse(fs.readFileSync(path.join(cfg.state, "supervisor.json"), "utf8")) as { nats_url?: string };
    if (st.nats_url) return st.nats_url;
  } catch {
    /* no running stack here */
  }
  return process.env.FLOTILLA_NATS_URL ?? "";
}

const pad = (n: number, w = 2): string => String(n).padStart(w, "0");

/** A time as Go's time.Time.String prints it in UTC: `2006-01-02 15:04:05.999999999 +0000 UTC`. */
export function goTime(env: Envelope): string {
  const d = fromTimestamp(env.timestamp) ?? new Date(0);
  const nanos = Number(env.timestamp?.nanos ?? 0);
  const frac = nanos ? `.${pad(nanos, 9).replace(/0+$/, "")}` : "";
  return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}${frac} +0000 UTC`;
}

/** One line as `ctr events` prints it. */
export function eventLine(env: Envelope): string {
  let json = "";
  const t = env.event ? anyType(env.event) : undefined;
  if (t) json = JSON.stringify(t.toObject(t.decode(env.event.value), { ...DECODE_OPTIONS, defaults: false }));
  return `${goTime(env)} ${env.namespace} ${env.topic} ${json}`;
}

function startTime(since: string): string {
  const m = /^(\d+)(ms|s|m|h)$/.exec(since);
  if (m) return new Date(Date.now() - Number(m[1]) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] as "s"]).toISOString();
  const d = new Date(since);
  if (Number.isNaN(d.getTime())) throw new Error(`--since ${JSON.stringify(since)}: not a time`);
  return d.toISOString();
}

export async function eventsCommand(args: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      options: {
        config: { type: "string", short: "c" }, address: { type: "string", short: "a" }, namespace: { type: "string", short: "n" },
        since: { type: "string" }, from: { type: "string" }, filter: { type: "string", multiple: true }, follow: { type: "boolean", short: "f" },
        nats: { type: "string" }, help: { type: "boolean", short: "h" },
      },
      strict: true,
    }));
  } catch (e) {
    process.stderr.write(`flotilla events: ${(e as Error).message}\n${USAGE}`);
    return 1;
  }
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  if (values.since && values.from) {
    process.stderr.write(`flotilla events: --since and --from exclude each other\n${USAGE}`);
    return 1;
  }
  const cfg = loadConfig(values.config ?? process.env.FLOTILLA_CONFIG);
  const url = values.nats ?? stackNatsUrl(cfg);
  if (!url) {
    process.stderr.write("flotilla events: no NATS server: set [flotilla.nats] url, pass --nats, or run `flotilla up` with this config\n");
    return 1;
  }
  const filter = parseAll(values.filter ?? []);
  const replay = values.since !== undefined || values.from !== undefined;
  const follow = values.follow || !replay;
  const start = values.from !== undefined ? { fromSeq: Number(values.from) } : values.since !== undefined ? { since: startTime(values.since) } : {};
  if (values.from !== undefined && !(Number(values.from) >= 1)) {
    process.stderr.write(`flotilla events: --from ${JSON.stringify(values.from)}: not a stream sequence (1 or more)\n`);
    return 1;
  }
  const nc = await connect({ servers: url.split(","), name: "flotilla-events", maxReconnectAttempts: -1, reconnectTimeWait: 250 });
  try {
    const stream = streamName(cfg.flotilla.events_subject_prefix);
    const last = (await (await nc.jetstreamManager()).streams.info(stream)).state.last_seq;
    const consumer = await streamConsumer(nc, stream, start);
    const print = (m: JsMsg): void => {
      try {
        const env = decodeEnvelope(m.data);
        if (filter.match(envelopeAdaptor(env))) process.stdout.write(`${eventLine(env)}\n`);
      } catch (e) {
        process.stderr.write(`flotilla events: message ${m.seq}: ${(e as Error).message}\n`);
      }
    };
    if (!follow) {
      // Up to the end of the stream as it was when we started.
      if (last === 0 || (await consumer.info()).num_pending === 0) return 0;
      const msgs = await consumer.consume();
      for await (const m of msgs) {
        if (m.seq <= last) print(m);
        if (m.seq >= last || m.info.pending === 0) break;
      }
      return 0;
    }
    const msgs = await consumer.consume();
    const stop = (): void => void msgs.close();
    process.once("SIGINT", stop);
    process.once("SIGTERM", stop);
    for await (const m of msgs) print(m);
    return 0;
  } finally {
    await nc.close();
  }
}
