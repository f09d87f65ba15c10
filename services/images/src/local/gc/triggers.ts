/**
 * Which events wake the garbage collector. Deletions in other processes free what only they referenced:
 * they schedule a pass (but not the collector's own deletes, which it recognises). Creations and
 * updates mark the namespace for the next pass (they count towards the mutation threshold).
 */
import { CONTAINER_EVENTS } from "#libs/core/containers";
import { CONTENT_EVENTS } from "#libs/core/content";
import { SNAPSHOT_EVENTS } from "#libs/core/snapshots";
import type { Envelope } from "#libs/events";
import { unpackAny } from "#libs/proto";

/** What a trigger does to the scheduler. */
export interface TriggerTarget {
  markDirty(ns: string): void;
  markMutation(ns: string): void;
}

/** Whether the collector itself removed the object lately (its own sweep's event wakes nothing). */
export type SweptRecently = (ns: string, kind: "content" | "snapshot", id: string) => boolean;

/** Topic -> what the object's id is in the sweeper's terms, for the deletions the collector also makes. */
const SWEPT_DELETIONS: Record<string, { kind: "content" | "snapshot"; id(env: Envelope): string }> = {
  [CONTENT_EVENTS.delete.topic]: { kind: "content", id: (env) => unpackAny<{ digest: string }>(env.event).digest },
  [SNAPSHOT_EVENTS.remove.topic]: {
    kind: "snapshot",
    id: (env) => {
      const e = unpackAny<{ key: string; snapshotter: string }>(env.event);
      return `${e.snapshotter}/${e.key}`;
    },
  },
};

const DELETIONS: readonly string[] = [CONTAINER_EVENTS.delete.topic];

const MUTATIONS: readonly string[] = [
  CONTENT_EVENTS.create.topic,
  SNAPSHOT_EVENTS.prepare.topic,
  SNAPSHOT_EVENTS.commit.topic,
  CONTAINER_EVENTS.create.topic,
  CONTAINER_EVENTS.update.topic,
];

/** Every topic a trigger reacts to (what the images process subscribes to). */
export const GC_TRIGGER_TOPICS: readonly string[] = [...DELETIONS, ...Object.keys(SWEPT_DELETIONS), ...MUTATIONS];

/**
 * The event handler that routes `env` to `target`. A deletion event that cannot be decoded wakes
 * nothing and goes to `undecodable` (the caller logs it).
 */
export function gcTriggers(target: TriggerTarget, sweptRecently: SweptRecently, undecodable: (err: unknown, env: Envelope) => void = () => undefined): (env: Envelope) => void {
  return (env) => {
    const ns = env.namespace;
    if (DELETIONS.includes(env.topic)) return target.markDirty(ns);
    const swept = SWEPT_DELETIONS[env.topic];
    if (swept) {
      let id: string;
      try {
        id = swept.id(env);
      } catch (err) {
        return undecodable(err, env);
      }
      if (!sweptRecently(ns, swept.kind, id)) target.markDirty(ns);
      return;
    }
    if (MUTATIONS.includes(env.topic)) target.markMutation(ns);
  };
}
