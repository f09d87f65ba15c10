/**
 * What the tasks process publishes to readers in other processes on its host (the gateway): the part
 * of its database's key schema they read (container records), the read-only open, and the decoder from
 * a stored container to the Containers.Get answer. The tasks process uses these same definitions itself.
 * A reader uses them only while the database records SCHEMA_VERSION (see libs/lmdb ReadView); a change
 * to anything here that an older reader would misread takes a new version.
 */
import type { RootDatabase } from "lmdb";
import { openServiceDB, type Key } from "#libs/lmdb";
import type { Container, TypedValue } from "#libs/core/containers";
import { containerToProto } from "#libs/clients/containers";
import type { Msg } from "#libs/grpc/server";
import { dateFromStored } from "#libs/time";

/** The version of what this module reads and decodes; the tasks process records it in its database. */
export const SCHEMA_VERSION = 1;

export type { Key };
export type TasksDB = RootDatabase<unknown, Key>;

/** The database file under the tasks process's root. */
export const DB_FILE = "meta.lmdb";

/** ["c", ns, id] -> StoredContainer. */
export const containerKey = (ns: string, id: string): Key => ["c", ns, id];

/** A typed value as stored (msgpack keeps the bytes). */
export interface StoredAny {
  t: string;
  v: Uint8Array;
}

export interface StoredContainer {
  labels: Record<string, string>;
  image: string;
  runtime: { name: string; options?: StoredAny };
  spec?: StoredAny;
  snapshotter: string;
  snapshotKey: string;
  extensions: Record<string, StoredAny>;
  sandbox: string;
  /** bigint nanoseconds (milliseconds, a number, in older records): libs/time */
  created: bigint | number;
  updated: bigint | number;
}

/** The database under the tasks process's root `dir`, read-only (for a libs/lmdb ReadView). */
export function openReadOnly(dir: string): TasksDB {
  return openServiceDB<Key>(dir, DB_FILE, true);
}

const fromStored = (a: StoredAny | undefined): TypedValue | undefined => (a ? { typeUrl: a.t, value: Buffer.from(a.v) } : undefined);

export function toContainer(id: string, s: StoredContainer): Container {
  const options = fromStored(s.runtime.options);
  const spec = fromStored(s.spec);
  return {
    id,
    labels: { ...s.labels },
    image: s.image,
    runtime: { name: s.runtime.name, ...(options ? { options } : {}) },
    ...(spec ? { spec } : {}),
    snapshotter: s.snapshotter,
    snapshotKey: s.snapshotKey,
    extensions: Object.fromEntries(Object.entries(s.extensions).map(([k, v]) => [k, fromStored(v)!])),
    sandbox: s.sandbox,
    createdAt: dateFromStored(s.created),
    updatedAt: dateFromStored(s.updated),
  };
}

/** The container `id` of namespace `ns`, if stored. */
export function readContainer(db: TasksDB, ns: string, id: string): Container | undefined {
  const s = db.get(containerKey(ns, id)) as StoredContainer | undefined;
  return s && toContainer(id, s);
}

/** Containers.Get from a read-only view of the database: the container when stored, else undefined (the owner answers). */
export function containerFromView(db: TasksDB, ns: string, req: Msg): Msg | undefined {
  const c = req.id ? readContainer(db, ns, String(req.id)) : undefined;
  return c && { container: containerToProto(c) };
}
