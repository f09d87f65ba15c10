/**
 * containerd events on NATS. Every event is a `containerd.types.Envelope` (timestamp, namespace, topic,
 * Any with the bare proto type URL), protobuf-encoded, published on
 *
 *   <prefix>.<namespace>.<topic components>          e.g. flotilla.events.default.namespaces.create
 *
 * with `.` inside a namespace or topic component written as `~` (neither may contain `~`), so NATS
 * wildcards filter by namespace (`flotilla.events.default.>`) or topic (`flotilla.events.*.tasks.exit`).
 * Headers: `traceparent` (W3C trace context), `containerd-namespace`, `containerd-topic`.
 */
import * as fs from "node:fs";
import { connect, credsAuthenticator, DeliverPolicy, headers as natsHeaders, nkeyAuthenticator, type Consumer, type ConsumerMessages, type ConnectionOptions, type NatsConnection, type Subscription, type MsgHdrs, type OrderedConsumerOptions } from "nats";
import { context as otelContext } from "@opentelemetry/api";
import type { Logger } from "pino";
import type { RootDatabase } from "lmdb";
import { namespaceRequired, validateIdentifier, type CallContext } from "../context";
import { errInvalidArgument } from "../errdefs";
import { NOT_PRESENT, present, type Adaptor } from "../filters";
import { anyType, decode, DECODE_OPTIONS, encode, packAny, toTimestamp, type AnyMsg, type Timestamp } from "../proto";
import { extractFromHeaders, injectIntoHeaders, type Context, type HeaderCarrier } from "../tracing";

export const ENVELOPE_TYPE = "containerd.types.Envelope";

export interface Envelope {
  timestamp: Timestamp;
  namespace: string;
  topic: string;
  event: AnyMsg;
}

export interface EventPublisher {
  /** Wrap `event` (a message of proto type `typeName`) in an envelope for the call's namespace and publish it. */
  publish(ctx: CallContext, topic: string, typeName: string, event: Record<string, unknown>): Promise<void>;
  /** Publish an already-packed Any (Events.Publish). */
  publishAny(ctx: CallContext, topic: string, event: AnyMsg): Promise<void>;
  /** Publish a complete envelope as-is (Events.Forward). */
  forward(ctx: CallContext, env: Envelope): Promise<void>;
}

/**
 * A publisher that records an event in the database of the change it describes, in the same write
 * transaction (libs/outbox): the event goes out if and only if the change is committed.
 */
export interface EventRecorder extends EventPublisher {
  /** Record `event` (of proto type `typeName`, in the call's namespace); only inside a write transaction on `db`. */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  record(db: RootDatabase<any, any>, ctx: CallContext, topic: string, typeName: string, event: Record<string, unknown>): void;
}

export interface SubscribeOptions {
  /**
   * Only these topics (any namespace), e.g. ["/namespaces/delete"]; all topics when absent. A
   * process that cares about a few topics should say so: then NATS does not wake it for every event.
   */
  topics?: readonly string[];
}

export interface EventSubscriber {
  subscribe(handler: (env: Envelope, raw: Buffer, trace: Context) => void, opts?: SubscribeOptions): () => void;
}

/** A subscriber that can read the events stream (NatsEventBus.follow). */
export interface EventFollower {
  follow(stream: string, handler: (env: Envelope, raw: Buffer, trace: Context) => void, subject?: string): Promise<() => void>;
}

const TOPIC_COMPONENT = /^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$/;

/** containerd's topic rules: starts with `/`, each component an identifier of at most 76 characters. */
export function validateTopic(topic: string): void {
  if (!topic.startsWith("/")) throw errInvalidArgument(`must start with '/': ${topic}`);
  const parts = topic.slice(1).split("/");
  for (const p of parts) {
    if (!TOPIC_COMPONENT.test(p) || p.length > 76) throw errInvalidArgument(`topic ${JSON.stringify(topic)} component ${JSON.stringify(p)} is not a valid identifier`);
  }
}

const escapeToken = (s: string): string => s.replace(/\./g, "~");

export function subjectFor(prefix: string, namespace: string, topic: string): string {
  return [prefix, escapeToken(namespace), ...topic.slice(1).split("/").map(escapeToken)].join(".");
}

/** The NATS subjects carrying `topics` in every namespace (everything when `topics` is absent). */
export function subjectsFor(prefix: string, topics?: readonly string[]): string[] {
  if (!topics) return [`${prefix}.>`];
  for (const t of topics) validateTopic(t);
  return [...new Set(topics)].map((t) => [prefix, "*", ...t.slice(1).split("/").map(escapeToken)].join("."));
}

export function encodeEnvelope(env: Envelope): Buffer {
  return encode(ENVELOPE_TYPE, env as unknown as Record<string, unknown>);
}

export function decodeEnvelope(buf: Uint8Array): Envelope {
  return decode<Envelope>(ENVELOPE_TYPE, buf);
}

/** containerd's Envelope.Field: namespace, topic, and the event's string and bool fields. */
export function envelopeAdaptor(env: Envelope): Adaptor {
  let decoded: Record<string, unknown> | null | undefined;
  return (fp) => {
    switch (fp[0]) {
      case "namespace": return env.namespace ? present(env.namespace) : NOT_PRESENT;
      case "topic": return env.topic ? present(env.topic) : NOT_PRESENT;
      case "event": {
        if (decoded === undefined) {
          const t = env.event ? anyType(env.event) : undefined;
          try {
            decoded = t ? (t.toObject(t.decode(env.event.value), { ...DECODE_OPTIONS, defaults: false }) as Record<string, unknown>) : null;
          } catch {
            decoded = null;
          }
        }
        let v: unknown = decoded;
        for (const f of fp.slice(1)) v = v && typeof v === "object" ? (v as Record<string, unknown>)[f] : undefined;
        if (typeof v === "string") return present(v);
        if (typeof v === "boolean") return present(String(v));
        return NOT_PRESENT;
      }
      default: return NOT_PRESENT;
    }
  };
}

/**
 * The subject of the events `filters` (containerd filters, as Events.Subscribe takes them) can match:
 * one namespace's when every filter requires `namespace==<that one>` as a plain clause (nothing quoted),
 * else every event's. A narrowing only: the filters are still applied to what comes.
 */
export function subjectForFilters(prefix: string, filters: readonly string[] | undefined): string {
  const all = `${prefix}.>`;
  if (!filters?.length) return all;
  const names = new Set<string>();
  for (const f of filters) {
    if (/["'`]/.test(f)) return all;
    const m = /(?:^|,)\s*namespace\s*==\s*([A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*)\s*(?:,|$)/.exec(f);
    if (!m) return all;
    names.add(m[1]!);
  }
  return names.size === 1 ? `${prefix}.${escapeToken([...names][0]!)}.>` : all;
}

/** JetStream's API has no responder: a server without JetStream (or with it disabled for this account). */
export const noJetStream = (e: unknown): boolean => (e as { code?: string })?.code === "503" || /jetstream not enabled|no responders/i.test((e as Error)?.message ?? "");

/** Where to start reading the events stream: its end ("now", the default), a stream sequence, or a time (ISO). */
export interface StreamStart {
  fromSeq?: number;
  since?: string;
  /** Only this subject (wildcards allowed; every subject of the stream when absent). */
  subject?: string;
}

/**
 * An ordered consumer of the events stream `stream`: ephemeral (nothing durable left on the server),
 * delivering in stream order, and after a reconnect (or a NATS restart) resuming after the last
 * sequence it delivered. `flotilla events` and the gateway's Events.Subscribe read the stream through it.
 */
export async function streamConsumer(nc: NatsConnection, stream: string, start: StreamStart = {}): Promise<Consumer> {
  const opts: Partial<OrderedConsumerOptions> = start.fromSeq !== undefined
    ? { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: start.fromSeq }
    : start.since !== undefined ? { deliver_policy: DeliverPolicy.StartTime, opt_start_time: start.since } : { deliver_policy: DeliverPolicy.New };
  // One subject, not a list: servers before 2.10 know `filter_subject` only.
  if (start.subject) opts.filterSubjects = start.subject;
  return nc.jetstream().consumers.get(stream, opts);
}

function carrier(h: MsgHdrs): HeaderCarrier {
  return {
    get: (k) => h.get(k),
    set: (k, v) => h.set(k, v),
    keys: () => h.keys(),
  };
}

interface Sub {
  handler: (env: Envelope, raw: Buffer, trace: Context) => void;
  subjects: string[];
  subs: Subscription[];
  /** Whether to hand this message on (all when absent). */
  accept?: (h: MsgHdrs | undefined) => boolean;
}

/** How to reach NATS besides its URL: `[flotilla.nats]`'s credentials and TLS files ("" or absent = unset). */
export interface NatsClientConfig {
  user?: string;
  password?: string;
  token?: string;
  nkey_seed_file?: string;
  creds_file?: string;
  tls_ca?: string;
  tls_cert?: string;
  tls_key?: string;
}

/**
 * nats.js connection options for `url` (one URL, or several comma-separated: a cluster, tried in
 * turn) and `c`. Key files are read at each (re)connection, so a rotated file is picked up.
 */
export function natsConnectOptions(url: string, c: NatsClientConfig = {}): ConnectionOptions {
  const opts: ConnectionOptions = { servers: url.split(",").map((u) => u.trim()).filter(Boolean) };
  if (c.user || c.password) Object.assign(opts, { user: c.user ?? "", pass: c.password ?? "" });
  if (c.token) opts.token = c.token;
  if (c.nkey_seed_file) {
    const file = c.nkey_seed_file;
    opts.authenticator = nkeyAuthenticator(() => new TextEncoder().encode(fs.readFileSync(file, "utf8").trim()));
  }
  if (c.creds_file) {
    const file = c.creds_file;
    opts.authenticator = credsAuthenticator(() => fs.readFileSync(file));
  }
  if (c.tls_ca || c.tls_cert) {
    opts.tls = {
      ...(c.tls_ca ? { caFile: c.tls_ca } : {}),
      ...(c.tls_cert ? { certFile: c.tls_cert, keyFile: c.tls_key } : {}),
    };
  }
  return opts;
}

export interface NatsEventBusOptions {
  /** One NATS URL, or several comma-separated (a cluster). */
  url: string;
  /** Credentials and TLS for it. */
  client?: NatsClientConfig;
  prefix: string;
  log: Logger;
  name: string;
  /** Events kept while NATS has never been reached; beyond that the oldest are dropped (and logged). */
  maxQueued?: number;
}

/**
 * Publisher and subscriber over NATS. It never blocks an RPC on NATS: before the first connection,
 * events queue in memory; after it, the client library buffers across reconnects.
 */
export class NatsEventBus implements EventPublisher, EventSubscriber, EventFollower {
  private nc?: NatsConnection;
  private closed = false;
  private queue: { subject: string; data: Buffer; hdrs: MsgHdrs }[] = [];
  private dropped = 0;
  private readonly subs = new Set<Sub>();
  private readonly connecting: Promise<void>;

  constructor(private readonly opts: NatsEventBusOptions) {
    this.connecting = this.connectLoop();
  }

  private async connectLoop(): Promise<void> {
    if (!this.opts.url) return;
    while (!this.closed) {
      try {
        const nc = await connect({
          ...natsConnectOptions(this.opts.url, this.opts.client),
          name: this.opts.name,
          reconnect: true,
          maxReconnectAttempts: -1,
          reconnectTimeWait: 250,
          waitOnFirstConnect: true,
          pingInterval: 5000,
        });
        if (this.closed) {
          await nc.close();
          return;
        }
        this.nc = nc;
        this.opts.log.info({ server: nc.getServer() }, "connected to NATS");
        void (async () => {
          for await (const s of nc.status()) {
            if (s.type === "disconnect" || s.type === "reconnect" || s.type === "error") this.opts.log.info({ type: s.type, data: String(s.data) }, "NATS status");
          }
        })().catch(() => undefined);
        for (const q of this.queue) nc.publish(q.subject, q.data, { headers: q.hdrs });
        this.queue = [];
        for (const s of this.subs) this.attach(s);
        return;
      } catch (e) {
        this.opts.log.warn({ err: (e as Error).message }, "NATS connect failed, retrying");
        await new Promise((r) => setTimeout(r, 500));
      }
    }
  }

  private send(subject: string, data: Buffer, ns: string, topic: string, ctx: CallContext): void {
    const hdrs = natsHeaders();
    hdrs.set("containerd-namespace", ns);
    hdrs.set("containerd-topic", topic);
    hdrs.set("content-type", "application/protobuf; proto=containerd.types.Envelope");
    injectIntoHeaders(ctx.trace, carrier(hdrs));
    if (this.nc && !this.nc.isClosed()) {
      this.nc.publish(subject, data, { headers: hdrs });
      return;
    }
    if (!this.opts.url) return;
    this.queue.push({ subject, data, hdrs });
    const max = this.opts.maxQueued ?? 10000;
    if (this.queue.length > max) {
      this.queue.shift();
      if (this.dropped++ % 1000 === 0) this.opts.log.warn({ dropped: this.dropped }, "NATS unreachable: dropping oldest queued events");
    }
  }

  /** The connection, once made (the outbox relay publishes to JetStream on it). */
  connection(): NatsConnection | undefined {
    return this.nc;
  }

  async publish(ctx: CallContext, topic: string, typeName: string, event: Record<string, unknown>): Promise<void> {
    await this.publishAny(ctx, topic, packAny(typeName, event));
  }

  async publishAny(ctx: CallContext, topic: string, event: AnyMsg): Promise<void> {
    const ns = namespaceRequired(ctx);
    validateTopic(topic);
    const env: Envelope = { timestamp: toTimestamp(), namespace: ns, topic, event };
    this.send(subjectFor(this.opts.prefix, ns, topic), encodeEnvelope(env), ns, topic, ctx);
  }

  async forward(ctx: CallContext, env: Envelope): Promise<void> {
    validateIdentifier(env.namespace);
    validateTopic(env.topic);
    if (!env.timestamp || (!env.timestamp.seconds && !env.timestamp.nanos)) throw errInvalidArgument("envelope timestamp must be set");
    this.send(subjectFor(this.opts.prefix, env.namespace, env.topic), encodeEnvelope(env), env.namespace, env.topic, ctx);
  }

  /** Hand one message (core NATS or JetStream) to `handler`, decoded. */
  private deliver(handler: Sub["handler"], msg: { data: Uint8Array; headers?: MsgHdrs; subject: string }): void {
    try {
      const raw = Buffer.from(msg.data);
      const trace = msg.headers ? extractFromHeaders(carrier(msg.headers)) : otelContext.active();
      handler(decodeEnvelope(raw), raw, trace);
    } catch (e) {
      this.opts.log.warn({ err: (e as Error).message, subject: msg.subject }, "undecodable event on NATS");
    }
  }

  private attach(s: Sub): void {
    if (!this.nc) return;
    s.subs = s.subjects.map((subject) => this.nc!.subscribe(subject, {
      callback: (err, msg) => {
        if (!err && (!s.accept || s.accept(msg.headers))) this.deliver(s.handler, msg);
      },
    }));
  }

  /**
   * Every event on `subject` (all when absent) from now on, once each: live from a core subscription,
   * and from the JetStream stream `stream` through an ordered consumer, which fills what the core
   * subscription missed while this connection was reconnecting (a stream message is the same event as
   * a core one with its `Nats-Msg-Id`, which every outbox event carries). When the server has no
   * JetStream or no such stream (as the outbox relay then publishes on core NATS), the core
   * subscription alone; it also carries on when JetStream is unavailable for a while (a NATS cluster
   * without a quorum). Resolves once the reading has started; the result stops it.
   */
  async follow(stream: string, handler: Sub["handler"], subject?: string): Promise<() => void> {
    await Promise.race([this.connecting, new Promise((r) => setTimeout(r, 2000))]);
    // Ids of the events delivered (the latest 50000): any other copy (the stream's, a relay's retry) is dropped.
    const ids = new Set<string>();
    const first = (h: MsgHdrs | undefined, fromStream: boolean): boolean => {
      const id = h?.get("Nats-Msg-Id");
      if (!id) return !fromStream;
      if (ids.has(id)) return false;
      ids.add(id);
      if (ids.size > 50_000) ids.delete(ids.values().next().value!);
      return true;
    };
    const s: Sub = { handler, subjects: subject ? [subject] : subjectsFor(this.opts.prefix), subs: [], accept: (h) => first(h, false) };
    this.subs.add(s);
    this.attach(s);
    const nc = this.nc;
    let messages: ConsumerMessages | undefined;
    if (nc && !nc.isClosed()) {
      try {
        messages = await (await streamConsumer(nc, stream, { subject: subject === `${this.opts.prefix}.>` ? undefined : subject })).consume();
      } catch (e) {
        if (!noJetStream(e) && !/stream not found/i.test((e as Error).message)) {
          this.unsubscribe(s);
          throw e;
        }
        this.opts.log.debug({ err: (e as Error).message, stream }, "no events stream: following core NATS");
      }
    }
    const msgs = messages;
    if (msgs) {
      void (async () => {
        for await (const m of msgs) if (first(m.headers, true)) this.deliver(handler, m);
      })().catch((e: unknown) => this.opts.log.warn({ err: (e as Error).message, stream }, "following the events stream stopped"));
    }
    return () => {
      this.unsubscribe(s);
      void msgs?.close().catch(() => undefined);
    };
  }

  private unsubscribe(s: Sub): void {
    this.subs.delete(s);
    for (const sub of s.subs) sub.unsubscribe();
  }

  subscribe(handler: (env: Envelope, raw: Buffer, trace: Context) => void, opts: SubscribeOptions = {}): () => void {
    const s: Sub = { handler, subjects: subjectsFor(this.opts.prefix, opts.topics), subs: [] };
    this.subs.add(s);
    this.attach(s);
    return () => this.unsubscribe(s);
  }

  async close(): Promise<void> {
    this.closed = true;
    const nc = this.nc;
    if (nc && !nc.isClosed()) {
      await nc.flush().catch(() => undefined);
      await nc.close().catch(() => undefined);
    }
    await Promise.race([this.connecting, new Promise((r) => setTimeout(r, 100))]);
  }
}
