/**
 * containerd.services.events.v1.Events bridged to NATS: Publish and Forward go into the outbox (and on to JetStream),
 * Subscribe streams every envelope on the bus (all namespaces, as containerd does) through the
 * client's filters (`namespace`, `topic`, `event.<field>`).
 */
import type { Adaptor } from "#libs/filters";
import { NOT_PRESENT, parseAll, present } from "#libs/filters";
import { errInvalidArgument, errResourceExhausted, errUnavailable } from "#libs/errdefs";
import type { Envelope, EventPublisher, EventSubscriber } from "#libs/events";
import { serviceHandlers, type ServiceHandlers } from "#libs/grpc/server";
import { anyType, DECODE_OPTIONS } from "#libs/proto";

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

const MAX_BACKLOG = 10000;

export const EVENTS_SERVICE = "containerd.services.events.v1.Events";

/**
 * `stopping` ends every open Subscribe with Unavailable when the gateway stops (as containerd's clients
 * see when it goes away), so they cannot hold its stop up; they subscribe again once it is back.
 */
export function eventsHandlers(bus: EventSubscriber, publisher: EventPublisher, stopping?: AbortSignal): ServiceHandlers<typeof EVENTS_SERVICE> {
  return serviceHandlers(EVENTS_SERVICE, {
    Publish: async (ctx, req) => {
      if (!req.event) throw errInvalidArgument("event must be set");
      await publisher.publishAny(ctx, req.topic ?? "", req.event);
      return {};
    },
    Forward: async (ctx, req) => {
      if (!req.envelope) throw errInvalidArgument("envelope must be set");
      await publisher.forward(ctx, req.envelope as Envelope);
      return {};
    },
    Subscribe: async (ctx, req, send) => {
      const filter = parseAll(req.filters ?? []);
      const backlog: Envelope[] = [];
      let wake: (() => void) | undefined;
      let overflow = false;
      const unsubscribe = bus.subscribe((env) => {
        if (!filter.match(envelopeAdaptor(env))) return;
        if (backlog.length >= MAX_BACKLOG) overflow = true;
        else backlog.push(env);
        wake?.();
      });
      let onStop: (() => void) | undefined;
      const aborted = new Promise<void>((resolve) => {
        ctx.signal.addEventListener("abort", () => resolve(), { once: true });
        stopping?.addEventListener("abort", (onStop = () => resolve()), { once: true });
      });
      try {
        while (!ctx.signal.aborted) {
          if (stopping?.aborted) throw errUnavailable("events: the server is shutting down");
          if (overflow) throw errResourceExhausted("event subscriber too slow: backlog exceeded");
          const env = backlog.shift();
          if (env) {
            await send(env);
            continue;
          }
          await Promise.race([new Promise<void>((r) => (wake = r)), aborted]);
          wake = undefined;
        }
      } finally {
        unsubscribe();
        if (onStop) stopping?.removeEventListener("abort", onStop);
      }
    },
  });
}
