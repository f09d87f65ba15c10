/**
 * The transactional outbox: an event is written into the database of the change it describes, in the
 * same LMDB transaction (`outbox.record(db, ...)` inside the owner's `writeTxn`), and a relay in the
 * same process publishes it to NATS JetStream, then removes it once JetStream acknowledged it.
 *
 * - Entries live under `["~outbox", seq]` in the owner's database (outside every owner's key space);
 *   `seq` is one process-wide, increasing number (at least the wall clock in microseconds, so it keeps
 *   increasing across restarts), so one relay merging every attached database by `seq` publishes in the
 *   order of the commits, per process and so per namespace.
 * - Each entry is published with `Nats-Msg-Id: <service>:<database id>:<seq>`: a retry after a lost
 *   ack or a crash between the ack and the removal is dropped by JetStream as a duplicate.
 * - The relay has one message in flight at a time (order survives a NATS restart), retries with backoff
 *   while NATS is down, and removes a published batch in one transaction.
 * - A change with no database of its own (a task exit, an event a shim forwards, Events.Publish) goes
 *   through `publish`/`publishAny`/`forward`: recorded in this process's own outbox database
 *   (`<root>/outbox.lmdb`), resolved once committed (synced).
 */
import * as crypto from "node:crypto";
import { headers as natsHeaders, nanos, DiscardPolicy, RetentionPolicy, StorageType, type NatsConnection, type StreamConfig } from "nats";
import type { Logger } from "pino";
import type { RootDatabase } from "lmdb";
import { namespaceRequired, validateIdentifier, type CallContext } from "../context";
import { errInvalidArgument } from "../errdefs";
import { encodeEnvelope, noJetStream, subjectFor, validateTopic, type Envelope, type EventPublisher, type EventRecorder } from "../events";
import { openServiceDB, scanPrefix, writeTxn } from "../lmdb";
import type { Metrics } from "../metrics";
import { packAny, toTimestamp, type AnyMsg } from "../proto";
import { injectIntoHeaders } from "../tracing";

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyDB = RootDatabase<any, any>;

const OUTBOX = "~outbox";
const ID_KEY = ["~outbox_id"];

/** One recorded event: what the relay publishes, as it will be published. */
interface Entry {
  subject: string;
  data: Uint8Array;
  headers: Record<string, string>;
}

/** `[flotilla.events]`: the JetStream stream's retention. */
export interface StreamSettings {
  /** Milliseconds an event is kept (0: no limit). */
  maxAgeMs: number;
  /** Bytes the stream keeps, the oldest dropped beyond (-1: no limit). */
  maxBytes: number;
  /** Copies in a NATS cluster. */
  replicas: number;
}

export const DEFAULT_STREAM: StreamSettings = { maxAgeMs: 7 * 24 * 3_600_000, maxBytes: 1024 * 1024 * 1024, replicas: 1 };
const DUPLICATE_WINDOW_MS = 120_000;

/** The stream carrying `<prefix>.>`: the prefix in upper case, `.` and other signs as `_`. */
export function streamName(prefix: string): string {
  return prefix.replace(/[^A-Za-z0-9_-]/g, "_").toUpperCase();
}

export function streamConfig(prefix: string, s: StreamSettings): Partial<StreamConfig> {
  return {
    name: streamName(prefix),
    subjects: [`${prefix}.>`],
    storage: StorageType.File,
    retention: RetentionPolicy.Limits,
    discard: DiscardPolicy.Old,
    max_age: nanos(s.maxAgeMs),
    max_bytes: s.maxBytes,
    num_replicas: s.replicas,
    duplicate_window: nanos(s.maxAgeMs > 0 ? Math.min(DUPLICATE_WINDOW_MS, s.maxAgeMs) : DUPLICATE_WINDOW_MS),
  };
}

const notFound = (e: unknown): boolean => /not found/i.test((e as Error)?.message ?? "");

/** Create the stream, or bring an existing one to `cfg` (idempotent; several processes may race here). */
export async function ensureStream(nc: NatsConnection, cfg: Partial<StreamConfig>): Promise<void> {
  const jsm = await nc.jetstreamManager({ timeout: 5000 });
  const name = cfg.name!;
  for (let attempt = 0; ; attempt++) {
    try {
      const info = await jsm.streams.info(name);
      const c = info.config;
      if (c.max_age !== cfg.max_age || c.max_bytes !== cfg.max_bytes || c.num_replicas !== cfg.num_replicas || c.duplicate_window !== cfg.duplicate_window || c.subjects.join() !== cfg.subjects!.join()) {
        await jsm.streams.update(name, { ...c, ...cfg });
      }
      return;
    } catch (e) {
      if (!notFound(e) || attempt > 2) throw e;
    }
    try {
      await jsm.streams.add(cfg);
      return;
    } catch (e) {
      // Another process created it meanwhile: look again.
      if (!/already in use|exists/i.test((e as Error).message) || attempt > 2) throw e;
    }
  }
}

export interface OutboxOptions {
  /** This process's name (the first part of every message id). */
  service: string;
  prefix: string;
  log: Logger;
  /** Where this process's own outbox database goes (`outbox.lmdb`), opened at first use. */
  root: string;
  /** The NATS connection to publish on, once there is one. */
  connection: () => NatsConnection | undefined;
  stream?: StreamSettings;
  /**
   * No outbox: every event handed to this publisher as before the outbox (core NATS, fire-and-forget,
   * lost while NATS is down). For a process without NATS, and the benchmarks' baseline
   * (`FLOTILLA_EVENTS_DIRECT=1`).
   */
  direct?: EventPublisher;
}

interface Pending {
  db: AnyDB;
  id: string;
  seq: number;
  entry: Entry;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export class Outbox implements EventRecorder {
  private readonly ids = new Map<AnyDB, string>();
  private own?: AnyDB;
  private last = 0;
  private started = false;
  private closed = false;
  private wake?: () => void;
  private kicked = false;
  private streamReady?: NatsConnection;
  /** Until when this server is known to have no JetStream: events go out on core NATS meanwhile. */
  private coreOnlyUntil = 0;
  private running?: Promise<void>;
  private published = 0;

  constructor(private readonly opts: OutboxOptions) {}

  /**
   * Export the depth gauge and the published counter on `m`'s registry (called once the process serves
   * /metrics: a process nobody scrapes does not load prom-client for them).
   */
  registerMetrics(m: Metrics): void {
    const { Counter, Gauge } = require("prom-client") as typeof import("prom-client");
    const self = this;
    new Gauge({
      name: "flotilla_events_outbox_depth", help: "Events recorded in this process's outbox and not yet acknowledged by JetStream.", registers: [m.registry],
      collect() {
        this.set(self.depth());
      },
    });
    new Counter({
      name: "flotilla_events_published_total", help: "Events the outbox relay published and JetStream acknowledged.", registers: [m.registry],
      collect() {
        this.reset();
        this.inc(self.published);
      },
    });
  }

  /** Events waiting in every attached database. */
  depth(): number {
    let n = 0;
    for (const db of this.ids.keys()) for (const _ of scanPrefix(db, [OUTBOX])) n++;
    return n;
  }

  /**
   * Relay `db`'s outbox (a database this process owns and writes): call at open, so that what a previous
   * run left behind goes out before anything new from it.
   */
  attach(db: AnyDB): void {
    if (this.ids.has(db)) return;
    let id = db.get(ID_KEY) as string | undefined;
    if (!id) {
      id = crypto.randomBytes(6).toString("hex");
      const fresh = id;
      db.transactionSync(() => void db.put(ID_KEY, fresh));
    }
    this.ids.set(db, id);
    for (const { key } of db.getRange({ start: [OUTBOX, "\uffff"], end: [OUTBOX], reverse: true, limit: 1 })) {
      const k = key as [string, number];
      if (k[0] === OUTBOX && typeof k[1] === "number") this.last = Math.max(this.last, k[1]);
    }
    this.kick();
  }

  private ownDB(): AnyDB {
    if (!this.own) {
      this.own = openServiceDB(this.opts.root, "outbox.lmdb");
      this.attach(this.own);
    }
    return this.own;
  }

  private nextSeq(): number {
    this.last = Math.max(this.last + 1, Date.now() * 1000);
    return this.last;
  }

  /** Record an event of the call's namespace in `db`'s outbox; only inside a write transaction on `db`. */
  record(db: AnyDB, ctx: CallContext, topic: string, typeName: string, event: Record<string, unknown>): void {
    validateTopic(topic);
    this.recordEnvelope(db, ctx, { timestamp: toTimestamp(), namespace: namespaceRequired(ctx), topic, event: packAny(typeName, event) });
  }

  /** Record a complete envelope in `db`'s outbox; only inside a write transaction on `db`. */
  recordEnvelope(db: AnyDB, ctx: CallContext, env: Envelope): void {
    const direct = this.opts.direct;
    if (direct) {
      setImmediate(() => void direct.forward(ctx, env).catch(() => undefined));
      return;
    }
    if (!this.ids.has(db)) this.attach(db);
    const headers: Record<string, string> = {
      "containerd-namespace": env.namespace,
      "containerd-topic": env.topic,
      "content-type": "application/protobuf; proto=containerd.types.Envelope",
    };
    injectIntoHeaders(ctx.trace, { get: (k) => headers[k], set: (k, v) => void (headers[k] = v), keys: () => Object.keys(headers) });
    const entry: Entry = { subject: subjectFor(this.opts.prefix, env.namespace, env.topic), data: encodeEnvelope(env), headers };
    void db.put([OUTBOX, this.nextSeq()], entry);
    // Runs after the transaction that holds this write has committed (it commits synchronously).
    setImmediate(() => this.kick());
  }

  async publish(ctx: CallContext, topic: string, typeName: string, event: Record<string, unknown>): Promise<void> {
    await this.publishAny(ctx, topic, packAny(typeName, event));
  }

  async publishAny(ctx: CallContext, topic: string, event: AnyMsg): Promise<void> {
    const ns = namespaceRequired(ctx);
    validateTopic(topic);
    await this.forwardChecked(ctx, { timestamp: toTimestamp(), namespace: ns, topic, event });
  }

  async forward(ctx: CallContext, env: Envelope): Promise<void> {
    validateIdentifier(env.namespace);
    validateTopic(env.topic);
    if (!env.timestamp || (!env.timestamp.seconds && !env.timestamp.nanos)) throw errInvalidArgument("envelope timestamp must be set");
    await this.forwardChecked(ctx, env);
  }

  private async forwardChecked(ctx: CallContext, env: Envelope): Promise<void> {
    if (this.opts.direct) return this.opts.direct.forward(ctx, env);
    const db = this.ownDB();
    await writeTxn(db, () => this.recordEnvelope(db, ctx, env));
  }

  /** Start relaying (once NATS is reachable) until close. */
  start(): void {
    if (this.started || this.opts.direct) return;
    this.started = true;
    this.running = this.relay().catch((err: unknown) => this.opts.log.error({ err }, "events relay stopped"));
  }

  private kick(): void {
    this.kicked = true;
    this.wake?.();
  }

  private async idle(ms: number): Promise<void> {
    if (this.kicked) return;
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, ms);
      this.wake = () => {
        clearTimeout(t);
        resolve();
      };
    });
    this.wake = undefined;
  }

  /** The oldest `max` entries of every attached database, merged by sequence. */
  private pending(max: number): Pending[] {
    const out: Pending[] = [];
    for (const [db, id] of this.ids) {
      let n = 0;
      for (const { key, value } of scanPrefix<Entry>(db, [OUTBOX])) {
        out.push({ db, id, seq: key[1] as number, entry: value });
        if (++n >= max) break;
      }
    }
    out.sort((a, b) => a.seq - b.seq);
    // The `max` oldest of every database hold the `max` oldest of all.
    return out.slice(0, max);
  }

  /** Make sure the stream exists on the current connection (once per connection). */
  private async ensure(nc: NatsConnection): Promise<void> {
    if (this.streamReady === nc || Date.now() < this.coreOnlyUntil) return;
    try {
      await ensureStream(nc, streamConfig(this.opts.prefix, this.opts.stream ?? DEFAULT_STREAM));
      this.streamReady = nc;
    } catch (e) {
      if (!noJetStream(e)) throw e;
      // A NATS server without JetStream: the events still go out (live subscribers see them) on
      // core NATS, each once the server has it (flush), but nothing keeps them for a replay.
      if (!this.coreOnlyUntil) this.opts.log.warn("NATS has no JetStream: events are published on core NATS, without a stream to replay them from");
      this.coreOnlyUntil = Date.now() + 10_000;
    }
  }

  private async relay(): Promise<void> {
    while (!this.closed) {
      this.kicked = false;
      const batch = this.pending(256);
      if (!batch.length) {
        // At start-up (and on a new connection) the stream is made even before there is an event.
        const nc = this.opts.connection();
        if (nc && !nc.isClosed() && this.streamReady !== nc) {
          await this.ensure(nc).catch((err: unknown) => this.opts.log.debug({ err: (err as Error).message }, "making the events stream failed, retrying"));
        }
        await this.idle(this.streamReady ? 1000 : 250);
        continue;
      }
      for (const p of batch) {
        if (!(await this.send(p))) return;
      }
      const byDb = new Map<AnyDB, number[]>();
      for (const p of batch) byDb.set(p.db, [...(byDb.get(p.db) ?? []), p.seq]);
      for (const [db, seqs] of byDb) await writeTxn(db, () => seqs.forEach((s) => void db.remove([OUTBOX, s])));
      this.published += batch.length;
    }
  }

  /** Publish one entry until JetStream acknowledges it (true), or the outbox closes (false). */
  private async send(p: Pending): Promise<boolean> {
    let backoff = 200;
    const msgID = `${this.opts.service}:${p.id}:${p.seq}`;
    for (let failures = 0; !this.closed; failures++) {
      const nc = this.opts.connection();
      try {
        if (!nc || nc.isClosed()) throw new Error("not connected to NATS");
        await this.ensure(nc);
        const h = natsHeaders();
        for (const [k, v] of Object.entries(p.entry.headers)) h.set(k, v);
        if (this.streamReady !== nc && Date.now() < this.coreOnlyUntil) {
          h.set("Nats-Msg-Id", msgID);
          nc.publish(p.entry.subject, p.entry.data, { headers: h });
          await Promise.race([nc.flush(), sleep(2000).then(() => Promise.reject(new Error("NATS did not answer a flush")))]);
          return true;
        }
        await nc.jetstream().publish(p.entry.subject, p.entry.data, { msgID, headers: h, timeout: 2000 });
        return true;
      } catch (err) {
        // The stream may be gone with a NATS server started on a new store: make sure of it again.
        this.streamReady = undefined;
        if (failures === 0 || failures % 20 === 0) this.opts.log.warn({ err: (err as Error).message, msgID, failures }, "publishing an event to JetStream failed, retrying");
        await sleep(backoff);
        backoff = Math.min(backoff * 2, 2000);
      }
    }
    return false;
  }

  /** Stop relaying (what is not published yet stays in the outbox for the next start). */
  async close(): Promise<void> {
    this.closed = true;
    this.wake?.();
    await Promise.race([this.running, sleep(3000)]);
    void this.own?.close();
  }
}
