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
 */
import type { RootDatabase } from "lmdb";
import { openServiceDB } from "../../../../libs/lmdb";
export { writeTxn } from "../../../../libs/lmdb";

export type Key = (string | number)[];
export type SnapshotsDB = RootDatabase<unknown, Key>;

/** Kind as stored: 1 view, 2 active, 3 committed (the wire numbers). */
export interface SnapshotRecord {
  id: number;
  kind: 1 | 2 | 3;
  parent: string;
  /** Backend ids of the ancestors, nearest first (fixed at creation: parents can't go away). */
  chain: number[];
  labels: Record<string, string>;
  /** bigint nanoseconds (milliseconds, a number, in older records): libs/time */
  created: bigint | number;
  updated: bigint | number;
  /** Cached usage of a committed snapshot (immutable, computed once on demand). */
  usage?: { size: number; inodes: number };
}

/** Highest key element, for prefix range ends. */
export const MAX_KEY_PART = "\u{10FFFF}";

/** The database under `dir`; `readOnly` for a view from another process (see libs/lmdb ReadView). */
export function openSnapshotsDB(dir: string, readOnly = false): SnapshotsDB {
  return openServiceDB<Key>(dir, "metadata.lmdb", readOnly);
}

export const snapKey = (sn: string, ns: string, key: string): Key => ["s", sn, ns, key];
export const childKey = (sn: string, ns: string, parent: string, child: string): Key => ["c", sn, ns, parent, child];
export const idKey = (sn: string, id: number): Key => ["i", sn, id];
export const layoutKey = (sn: string): Key => ["m", sn];
export const seqKey = (sn: string): Key => ["q", sn];
export const leaseKey = (ns: string, lease: string, type: string, id: string): Key => ["l", ns, lease, type, id];
