/**
 * The CRI's own lifecycle events, as containerd 1.7's CRI produces them for the kubelet's evented PLEG
 * (`RuntimeService/GetContainerEvents`): CONTAINER_CREATED, _STARTED, _STOPPED and _DELETED, for pods
 * (the pod's id as the container id) and for containers, each with the pod's status and its
 * containers' statuses at the time.
 *
 * The containerd events of the same work (`/containers/*`, `/tasks/*`, `/images/*`, `/sandboxes/*` in
 * namespace `k8s.io`) are published on NATS by the processes the CRI calls, as containerd's services
 * publish them for its CRI; nothing here is published twice.
 *
 * containerd keeps up to 1000 undelivered events in one channel that its (single) watcher drains; here
 * every watcher gets every event emitted while it watches, and a watcher that falls 1000 events behind
 * loses the oldest (with a warning), so a stuck client never holds the CRI up.
 */
import type { Logger } from "pino";
import type { Input } from "#libs/proto/types";

export const ContainerEventType = { created: 0, started: 1, stopped: 2, deleted: 3 } as const;
export type ContainerEventKind = keyof typeof ContainerEventType;

export type ContainerEventResponse = Input["runtime.v1.ContainerEventResponse"];

/** What a part says happened; the statuses are optional (the kubelet refetches what is missing). */
export interface ContainerEvent {
  containerId: string;
  kind: ContainerEventKind;
  podSandboxStatus?: Input["runtime.v1.PodSandboxStatus"];
  containersStatuses?: Input["runtime.v1.ContainerStatus"][];
}

export const MAX_PENDING_EVENTS = 1000;

export interface CriEvents {
  /** Hand an event to every watcher (never blocks, never throws). */
  emit(e: ContainerEvent): void;
  /** The events emitted from now until `signal` aborts, in order. */
  watch(signal: AbortSignal): AsyncGenerator<ContainerEventResponse>;
  /** How many watchers there are (for tests and metrics). */
  readonly watchers: number;
}

export function createCriEvents(log: Pick<Logger, "warn">): CriEvents {
  const watchers = new Set<{ queue: ContainerEventResponse[]; wake?: () => void; dropped: number }>();
  return {
    get watchers() {
      return watchers.size;
    },
    emit(e) {
      const msg: ContainerEventResponse = {
        container_id: e.containerId,
        container_event_type: ContainerEventType[e.kind],
        created_at: String(BigInt(Date.now()) * 1_000_000n + process.hrtime.bigint() % 1_000_000n),
        ...(e.podSandboxStatus ? { pod_sandbox_status: e.podSandboxStatus } : {}),
        containers_statuses: e.containersStatuses ?? [],
      };
      for (const w of watchers) {
        w.queue.push(msg);
        if (w.queue.length > MAX_PENDING_EVENTS) {
          w.queue.shift();
          if (w.dropped++ === 0) log.warn({ limit: MAX_PENDING_EVENTS }, "a GetContainerEvents watcher is too slow: dropping its oldest events");
        }
        w.wake?.();
      }
    },
    async *watch(signal) {
      const w: { queue: ContainerEventResponse[]; wake?: () => void; dropped: number } = { queue: [], dropped: 0 };
      watchers.add(w);
      const onAbort = (): void => w.wake?.();
      signal.addEventListener("abort", onAbort, { once: true });
      try {
        while (!signal.aborted) {
          const next = w.queue.shift();
          if (next) {
            yield next;
            continue;
          }
          await new Promise<void>((r) => (w.wake = r));
          w.wake = undefined;
        }
      } finally {
        signal.removeEventListener("abort", onAbort);
        watchers.delete(w);
      }
    },
  };
}
