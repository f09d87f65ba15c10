/**
 * The snapshots process's metadata database (LMDB via the `lmdb` package). LMDB commits are atomic
 * copy-on-write B-tree transactions, so a crash at any moment leaves the last committed state.
 *
 * Key layout (msgpack values; arrays are ordered element by element):
 *
 *   ["s", snapshotter, ns, key]            -> SnapshotRecord      one per snapshot
 *   ["c", snapshotter, ns, parent, child]  -> 1                   children index (remove with children fails)
 *   ["i", snapshotter, id]                 -> [ns, key]           backend directory id -> owner (reconciliation)
 *   ["q", snapshotter]                     -> last id used        id sequence
 *   ["l", ns, lease, type, id]             -> created ms          lease resources (see SnapshotLeaseRecorder)
 *   ["m", snapshotter]                     -> MountLayout         a snapshotter loaded by the running process
 *   ["schema_version"]                     -> number              the SCHEMA_VERSION of ../../public
 *
 * Snapshot records and mount layouts are published to readers in other processes: their keys and
 * records are defined in ../../public.
 */
import { openServiceDB, stampSchemaVersion } from "#libs/lmdb";
import { DB_FILE, SCHEMA_VERSION, type Key, type SnapshotsDB } from "../../public";
export { writeTxn } from "#libs/lmdb";
export { layoutKey, snapKey, type Key, type SnapshotRecord, type SnapshotsDB } from "../../public";

/** Highest key element, for prefix range ends. */
export const MAX_KEY_PART = "\u{10FFFF}";

/** The snapshots process's database under its root `dir`, recording the schema version it publishes. */
export function openSnapshotsDB(dir: string): SnapshotsDB {
  const db = openServiceDB<Key>(dir, DB_FILE);
  stampSchemaVersion(db, SCHEMA_VERSION);
  return db;
}

export const childKey = (sn: string, ns: string, parent: string, child: string): Key => ["c", sn, ns, parent, child];
export const idKey = (sn: string, id: number): Key => ["i", sn, id];
export const seqKey = (sn: string): Key => ["q", sn];
export const leaseKey = (ns: string, lease: string, type: string, id: string): Key => ["l", ns, lease, type, id];
