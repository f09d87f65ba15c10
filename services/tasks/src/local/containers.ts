/**
 * The local ContainerStore: container records in the tasks process's LMDB database, with containerd's
 * semantics (metadata/containers.go): validation, field masks, server-stamped times, Any values kept
 * byte for byte, and /containers/* events recorded in the transaction of each change (libs/outbox).
 *
 * Keys: ["c", namespace, id] -> StoredContainer, and ["schema_version"] -> the SCHEMA_VERSION of
 * ../../public, where container records (published to readers in other processes) are defined.
 */
import { openServiceDB, stampSchemaVersion, writeTxn } from "#libs/lmdb";
import { namespaceRequired, validateIdentifier, type CallContext } from "#libs/context";
import { causeText, errAlreadyExists, errInvalidArgument, errNotFound } from "#libs/errdefs";
import { compactLabels, validateLabels } from "#libs/fieldmask";
import { mapField, NOT_PRESENT, parseAll, present, type Adaptor } from "#libs/filters";
import type { EventRecorder } from "#libs/events";
import { CONTAINER_EVENTS, type Container, type ContainerInput, type ContainerStore, type TypedValue } from "#libs/core/containers";
import { laterThan, storedTime } from "#libs/time";
import { containerKey as key, DB_FILE, readContainer, SCHEMA_VERSION, toContainer, type Key, type StoredAny, type StoredContainer, type TasksDB } from "../../public";

export type { TasksDB };

/** The tasks process's database under its root `dir`, recording the schema version it publishes. */
export function openTasksDB(dir: string): TasksDB {
  const db = openServiceDB<Key>(dir, DB_FILE);
  stampSchemaVersion(db, SCHEMA_VERSION);
  return db;
}

const toStored = (a: TypedValue | undefined): StoredAny | undefined => (a ? { t: a.typeUrl, v: Buffer.from(a.value) } : undefined);
/** containerd's adaptContainer: `id`, `image`, `runtime.name`, `labels.<k>` (plus `snapshotter`, `sandbox`). */
export function containerAdaptor(c: Container): Adaptor {
  const nonEmpty = (v: string): { value: string; present: boolean } => (v ? present(v) : NOT_PRESENT);
  return (fp) => {
    switch (fp[0]) {
      case "id": return nonEmpty(c.id);
      case "image": return nonEmpty(c.image);
      case "runtime": return fp[1] === "name" && fp.length === 2 ? nonEmpty(c.runtime.name) : NOT_PRESENT;
      case "snapshotter": return nonEmpty(c.snapshotter);
      case "sandbox": return nonEmpty(c.sandbox);
      case "labels": return mapField(c.labels, fp.slice(1));
      default: return NOT_PRESENT;
    }
  };
}

/** containerd's validateContainer. */
function validate(s: StoredContainer, id: string): void {
  try {
    validateIdentifier(id);
  } catch (e) {
    throw errInvalidArgument(`container.ID: ${causeText(e)}`);
  }
  for (const k of Object.keys(s.extensions)) if (k === "") throw errInvalidArgument("container.Extension keys must not be zero-length");
  const bad = validateLabels(s.labels);
  if (bad) throw errInvalidArgument(`containers.Labels: ${bad}`);
  if (!s.runtime.name) throw errInvalidArgument("must specify a runtime name");
  if (!s.spec) throw errInvalidArgument("container.Spec must be set");
  if (s.snapshotKey && !s.snapshotter) throw errInvalidArgument("container.Snapshotter must be set if container.SnapshotKey is set");
}

export interface LocalContainerStoreOptions {
  /** Called before the first write in a namespace (creates it, as containerd does). */
  ensureNamespace?: (ctx: CallContext, ns: string) => Promise<void>;
}

export class LocalContainerStore implements ContainerStore {
  constructor(
    private readonly db: TasksDB,
    private readonly events: EventRecorder,
    private readonly opts: LocalContainerStoreOptions = {},
  ) {}

  async create(ctx: CallContext, c: ContainerInput): Promise<Container> {
    const ns = namespaceRequired(ctx);
    const now = storedTime();
    const s: StoredContainer = {
      labels: compactLabels(c.labels),
      image: c.image ?? "",
      runtime: { name: c.runtime?.name ?? "", ...(c.runtime?.options ? { options: toStored(c.runtime.options) } : {}) },
      ...(c.spec ? { spec: toStored(c.spec) } : {}),
      snapshotter: c.snapshotter ?? "",
      snapshotKey: c.snapshotKey ?? "",
      extensions: Object.fromEntries(Object.entries(c.extensions ?? {}).map(([k, v]) => [k, toStored(v)!])),
      sandbox: c.sandbox ?? "",
      created: now,
      updated: now,
    };
    try {
      validate(s, c.id);
    } catch (e) {
      throw errInvalidArgument(`create container failed validation: ${causeText(e)}`);
    }
    await this.opts.ensureNamespace?.(ctx, ns);
    const k = key(ns, c.id);
    const out = toContainer(c.id, s);
    const ok = await writeTxn(this.db, () => {
      if (this.db.get(k) !== undefined) return false;
      void this.db.put(k, s);
      this.events.record(this.db, ctx, CONTAINER_EVENTS.create.topic, CONTAINER_EVENTS.create.type, {
        id: out.id,
        image: out.image,
        runtime: { name: out.runtime.name, options: out.runtime.options ? { type_url: out.runtime.options.typeUrl, value: Buffer.from(out.runtime.options.value) } : null },
      });
      return true;
    });
    if (!ok) throw errAlreadyExists(`container ${JSON.stringify(c.id)}`);
    return out;
  }

  async update(ctx: CallContext, c: ContainerInput, fields: readonly string[] = []): Promise<Container> {
    const ns = namespaceRequired(ctx);
    if (!c.id) throw errInvalidArgument("must specify a container id");
    const k = key(ns, c.id);
    const updated = await writeTxn(this.db, () => {
      const cur = this.db.get(k) as StoredContainer | undefined;
      if (!cur) throw errNotFound(`container ${JSON.stringify(c.id)}`);
      const next: StoredContainer = { ...cur, labels: { ...cur.labels }, extensions: { ...cur.extensions } };
      let paths = [...fields];
      if (paths.length === 0) {
        paths = ["labels", "spec", "extensions", "image", "snapshotkey"];
        if ((c.snapshotter ?? "") !== cur.snapshotter) throw errInvalidArgument("container.Snapshotter field is immutable");
        if ((c.runtime?.name ?? "") !== cur.runtime.name) throw errInvalidArgument("container.Runtime.Name field is immutable");
      }
      for (const p of paths) {
        if (p.startsWith("labels.")) {
          const lk = p.slice("labels.".length);
          const v = c.labels?.[lk];
          if (v) next.labels[lk] = v;
          else delete next.labels[lk];
          continue;
        }
        if (p.startsWith("extensions.")) {
          const ek = p.slice("extensions.".length);
          const v = c.extensions?.[ek];
          if (v) next.extensions[ek] = toStored(v)!;
          else delete next.extensions[ek];
          continue;
        }
        switch (p) {
          case "labels": next.labels = compactLabels(c.labels); break;
          case "spec": next.spec = toStored(c.spec); break;
          case "extensions": next.extensions = Object.fromEntries(Object.entries(c.extensions ?? {}).map(([ek, v]) => [ek, toStored(v)!])); break;
          case "image": next.image = c.image ?? ""; break;
          case "snapshotkey": next.snapshotKey = c.snapshotKey ?? ""; break;
          default: throw errInvalidArgument(`cannot update ${JSON.stringify(p)} field on ${JSON.stringify(c.id)}`);
        }
      }
      try {
        validate(next, c.id);
      } catch (e) {
        throw errInvalidArgument(`update validation error: ${causeText(e)}`);
      }
      next.updated = laterThan(cur.updated, 1n);
      void this.db.put(k, next);
      const out = toContainer(c.id, next);
      this.events.record(this.db, ctx, CONTAINER_EVENTS.update.topic, CONTAINER_EVENTS.update.type, {
        id: out.id,
        image: out.image,
        labels: out.labels,
        snapshot_key: out.snapshotKey,
      });
      return out;
    });
    return updated;
  }

  async get(ctx: CallContext, id: string): Promise<Container> {
    const ns = namespaceRequired(ctx);
    if (!id) throw errInvalidArgument("container id must not be empty");
    const c = readContainer(this.db, ns, id);
    if (!c) throw errNotFound(`container ${JSON.stringify(id)} in namespace ${JSON.stringify(ns)}`);
    return c;
  }

  async list(ctx: CallContext, filters: readonly string[] = []): Promise<Container[]> {
    const ns = namespaceRequired(ctx);
    const f = parseAll(filters);
    const out: Container[] = [];
    for (const { key: k, value } of this.db.getRange({ start: ["c", ns, ""], end: ["c", `${ns}\0`] })) {
      if (k.length !== 3 || k[1] !== ns) continue;
      const c = toContainer(String(k[2]), value as StoredContainer);
      if (f.match(containerAdaptor(c))) out.push(c);
    }
    return out;
  }

  async delete(ctx: CallContext, id: string): Promise<void> {
    const ns = namespaceRequired(ctx);
    if (!id) throw errInvalidArgument("container id must not be empty");
    const k = key(ns, id);
    const ok = await writeTxn(this.db, () => {
      if (this.db.get(k) === undefined) return false;
      void this.db.remove(k);
      this.events.record(this.db, ctx, CONTAINER_EVENTS.delete.topic, CONTAINER_EVENTS.delete.type, { id });
      return true;
    });
    if (!ok) throw errNotFound(`cannot delete container ${JSON.stringify(id)} in namespace ${JSON.stringify(ns)}`);
  }

  /** Every namespace holding containers (for restart recovery). */
  namespaces(): string[] {
    const out = new Set<string>();
    for (const k of this.db.getKeys({ start: ["c"], end: ["c\0"] })) if (k.length === 3) out.add(String(k[1]));
    return [...out];
  }
}
