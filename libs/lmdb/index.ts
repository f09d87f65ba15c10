/**
 * Group commit for the services' LMDB databases (the `lmdb` package).
 */
import type { RootDatabase } from "lmdb";

interface QueuedWrite {
  fn: () => unknown;
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
}

type AnyDB = RootDatabase<any, any>;
const writeQueues = new WeakMap<AnyDB, QueuedWrite[]>();

/**
 * Run `fn` in a write transaction; resolves with its result once the transaction is committed (visible
 * to every reader, and kept across a crash of this process). Writes queued in the same event-loop turn
 * share one synchronous LMDB transaction (group commit), each in its own child transaction, so one
 * that throws undoes only its own changes. Cheaper than lmdb-js's asynchronous transactions (which hand
 * each callback to the write thread and back). The flush to disk follows the commit (lmdb-js's
 * overlappingSync); a caller that must not answer before the data would survive a power loss awaits
 * `db.flushed` (the content store does before it acknowledges a commit).
 */
export function writeTxn<T>(db: AnyDB, fn: () => T): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let queue = writeQueues.get(db);
    if (!queue) writeQueues.set(db, (queue = []));
    queue.push({ fn, resolve: resolve as (v: unknown) => void, reject });
    if (queue.length === 1) setImmediate(() => flushWrites(db));
  });
}

function flushWrites(db: AnyDB): void {
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
