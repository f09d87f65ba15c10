/**
 * Task events from the shim to the daemon: `containerd.services.events.ttrpc.v1.Events/Forward` on
 * `$TTRPC_ADDRESS`, one at a time in publish order (containerd's order rules depend on it). The
 * connection is dialled lazily and redialled after failures; each event is retried up to 5 times with
 * a growing pause (1 s x attempt), then dropped; at most 2048 events wait. An event caused by a call
 * carries that call's trace context (`traceparent`) in the Forward request's metadata, as containerd's
 * ttrpc interceptor sends it, and the daemon puts it on the event it publishes.
 */
import { TtrpcClient, NAMESPACE_KEY } from "#libs/ttrpc/client";
import { encode, type Obj, type Schema } from "./pb";
import { Envelope, ForwardRequest } from "./messages";
import type { ShimLogger } from "./log";
import { toTimestamp, type Timestamp } from "#libs/time";

const SERVICE = "containerd.services.events.ttrpc.v1.Events";
/** W3C trace context's metadata key (lower case, as OpenTelemetry's propagator writes it). */
export const TRACEPARENT_KEY = "traceparent";
const MAX_QUEUE = 2048;
const MAX_ATTEMPTS = 5;
const CALL_TIMEOUT_MS = 5000;

/** A Timestamp of `d` (now when omitted), nanoseconds kept (libs/time). */
export function nowTimestamp(d?: Date): Timestamp {
  return toTimestamp(d);
}

export class Publisher {
  /** Encoded ForwardRequests with the namespace they were published in (a recycled shim changes it) and their trace. */
  private readonly queue: { payload: Buffer; ns: string; trace?: string }[] = [];
  private client?: TtrpcClient;
  private running = false;
  private idle: (() => void)[] = [];

  constructor(private readonly address: string, public namespace: string, private readonly log: ShimLogger) {}

  /** Queue an event; `trace`: the `traceparent` of the call that caused it. */
  publish(topic: string, schema: Schema, event: Obj, trace?: string): void {
    const env = {
      timestamp: nowTimestamp(),
      namespace: this.namespace,
      topic,
      event: { type_url: schema.name, value: encode(schema, event) },
    };
    if (this.queue.length >= MAX_QUEUE) {
      this.log.warn("event queue full, dropping the oldest event");
      this.queue.shift();
    }
    this.queue.push({ payload: encode(ForwardRequest, { envelope: env }), ns: this.namespace, trace });
    this.log.debug("event", { topic });
    if (!this.running) void this.run();
  }

  /** Resolve when the queue is empty (or after `timeoutMs`). */
  flush(timeoutMs: number): Promise<void> {
    if (!this.running && this.queue.length === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const t = setTimeout(resolve, timeoutMs);
      this.idle.push(() => {
        clearTimeout(t);
        resolve();
      });
    });
  }

  close(): void {
    this.client?.close();
  }

  private async connect(): Promise<TtrpcClient> {
    if (this.client?.isOpen) return this.client;
    this.client = await TtrpcClient.connect(this.address);
    return this.client;
  }

  private async run(): Promise<void> {
    this.running = true;
    try {
      while (this.queue.length) {
        const { payload, ns, trace } = this.queue[0]!;
        const metadata: Record<string, string[]> = { [NAMESPACE_KEY]: [ns] };
        if (trace) metadata[TRACEPARENT_KEY] = [trace];
        for (let attempt = 1; ; attempt++) {
          try {
            const c = await this.connect();
            await c.call(SERVICE, "Forward", payload, { timeoutMs: CALL_TIMEOUT_MS, metadata });
            break;
          } catch (e) {
            this.client?.close();
            this.client = undefined;
            if (attempt >= MAX_ATTEMPTS) {
              this.log.error("dropping an event after retries", { err: e as Error });
              break;
            }
            await new Promise((r) => setTimeout(r, 1000 * attempt));
          }
        }
        this.queue.shift();
      }
    } finally {
      this.running = false;
      for (const f of this.idle.splice(0)) f();
    }
  }
}
