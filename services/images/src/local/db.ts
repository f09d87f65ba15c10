/**
 * The images process's metadata database: LMDB (via the `lmdb` package). LMDB commits are atomic and
 * fsync'ed copy-on-write B-tree transactions, so a crash at any moment leaves the last committed state.
 *
 * Keys (ordered-binary tuples):
 *   ["ns", name]                    -> {labels, created_at}          namespaces
 *   ["img", ns, nameKey(name)]      -> StoredImage                   images (a long name keyed by its
 *                                                                    digest, the record keeps the name)
 *   ["lease", ns, id]               -> StoredLease                   leases
 *   ["lease-forget", ns, id]        -> ms                            deleted leases whose records in other
 *                                                                    processes are still to be forgotten
 */
import type { RootDatabase } from "lmdb";
import { openServiceDB } from "../../../../libs/lmdb";

export type MetaDB = RootDatabase<unknown, (string | number)[]>;
export type Key = (string | number)[];

/** The database under `dir`; `readOnly` for a view from another process (see libs/lmdb ReadView). */
export function openMetaDB(dir: string, readOnly = false): MetaDB {
  return openServiceDB(dir, "meta.lmdb", readOnly);
}

/**
 * The range of every [...prefix, k] key (k any string). The end bound appends "\0" to the prefix's last
 * string, which sorts after every longer key with that prefix (a "\uffff" bound would miss keys whose
 * next part starts with a character outside the BMP).
 */
function prefixRange(prefix: Key): { start: Key; end: Key } {
  const last = prefix[prefix.length - 1];
  return { start: [...prefix, ""], end: [...prefix.slice(0, -1), `${String(last)}\0`] };
}

/** Every [...prefix, k] entry, in key order. `prefix` ends with a string. */
export function* scanPrefix<V>(db: MetaDB, prefix: Key): Iterable<{ key: Key; value: V }> {
  for (const e of db.getRange(prefixRange(prefix))) if (e.key.length === prefix.length + 1) yield { key: e.key as Key, value: e.value as V };
}

/** True when anything is stored under `prefix`. */
export function anyUnder(db: MetaDB, prefix: Key): boolean {
  for (const _ of db.getKeys({ ...prefixRange(prefix), limit: 1 })) return true;
  return false;
}
