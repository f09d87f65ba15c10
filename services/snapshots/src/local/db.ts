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
 */
import * as path from "node:path";
import { open, type RootDatabase } from "lmdb";

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
  created: number;
  updated: number;
  /** Cached usage of a committed snapshot (immutable, computed once on demand). */
  usage?: { size: number; inodes: number };
}

/** Highest key element, for prefix range ends. */
export const MAX_KEY_PART = "\u{10FFFF}";

export function openSnapshotsDB(dir: string): SnapshotsDB {
  return open<unknown, Key>({ path: path.join(dir, "metadata.lmdb"), compression: false, encoding: "msgpack" });
}

interface QueuedWrite {
  fn: () => unknown;
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
}

const writeQueues = new WeakMap<SnapshotsDB, QueuedWrite[]>();

/**
 * Run `fn` in a write transaction; resolves with its result once the transaction is committed and
 * flushed to disk. Writes queued in the same event-loop turn share one synchronous LMDB transaction
 * and one flush (group commit), each in its own child transaction, so one that throws undoes only
 * its own changes. Cheaper than lmdb-js's asynchronous transactions (which hand each callback to
 * the write thread and back); the event loop waits for the flush, once per batch.
 */
export function writeTxn<T>(db: SnapshotsDB, fn: () => T): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let queue = writeQueues.get(db);
    if (!queue) writeQueues.set(db, (queue = []));
    queue.push({ fn, resolve: resolve as (v: unknown) => void, reject });
    if (queue.length === 1) setImmediate(() => flushWrites(db));
  });
}

function flushWrites(db: SnapshotsDB): void {
  const batch = writeQueues.get(db) ?? [];
  writeQueues.set(db, []);
  if (batch.length === 0) return;
  const results: ({ ok: unknown } | { err: unknown })[] = [];
  try {
    db.transactionSync(() => {
      for (const w of batch) {
        try {
          // Nested: a child transaction, aborted alone when `fn` throws.
          results.push({ ok: db.transactionSync(w.fn) });
        } catch (err) {
          results.push({ err });
        }
      }
    });
  } catch (err) {
    for (const w of batch) w.reject(err);
    return;
  }
  batch.forEach((w, i) => {
    const r = results[i]!;
    if ("ok" in r) w.resolve(r.ok);
    else w.reject(r.err);
  });
}

export const snapKey = (sn: string, ns: string, key: string): Key => ["s", sn, ns, key];
export const childKey = (sn: string, ns: string, parent: string, child: string): Key => ["c", sn, ns, parent, child];
export const idKey = (sn: string, id: number): Key => ["i", sn, id];
export const seqKey = (sn: string): Key => ["q", sn];
export const leaseKey = (ns: string, lease: string, type: string, id: string): Key => ["l", ns, lease, type, id];
