/**
 * containerd.services.events.v1.Events bridged to NATS: Publish and Forward go into the outbox (and on to JetStream),
 * Subscribe streams every envelope from now on (all namespaces, as containerd does) through the
 * client's filters (`namespace`, `topic`, `event.<field>`), live and from the JetStream stream so that
 * none is missed while the gateway's NATS connection is reconnecting (NatsEventBus.follow).
 */
import { parseAll } from "#libs/filters";
import { errInvalidArgument, errResourceExhausted, errUnavailable } from "#libs/errdefs";
import { envelopeAdaptor, subjectForFilters, type Envelope, type EventFollower, type EventPublisher } from "#libs/events";
import { streamName } from "#libs/outbox";
import { serviceHandlers, type ServiceHandlers } from "#libs/grpc/server";

const MAX_BACKLOG = 10000;

export const EVENTS_SERVICE = "containerd.services.events.v1.Events";

/**
 * `stopping` ends every open Subscribe with Unavailable when the gateway stops (as containerd's clients
 * see when it goes away), so they cannot hold its stop up; they subscribe again once it is back.
 */
export function eventsHandlers(bus: EventFollower, prefix: string, publisher: EventPublisher, stopping?: AbortSignal): ServiceHandlers<typeof EVENTS_SERVICE> {
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
      const unsubscribe = await bus.follow(streamName(prefix), (env) => {
        if (!filter.match(envelopeAdaptor(env))) return;
        if (backlog.length >= MAX_BACKLOG) overflow = true;
        else backlog.push(env);
        wake?.();
      }, subjectForFilters(prefix, req.filters));
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
