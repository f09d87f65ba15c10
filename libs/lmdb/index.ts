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
 * Run `fn` in a write transaction; resolves with its result once the transaction is committed and
 * flushed to disk. Writes queued in the same event-loop turn share one synchronous LMDB transaction
 * and one flush (group commit), each in its own child transaction, so one that throws undoes only
 * its own changes. Cheaper than lmdb-js's asynchronous transactions (which hand each callback to
 * the write thread and back); the event loop waits for the flush, once per batch.
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
