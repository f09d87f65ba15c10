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
 *   ["schema_version"]              -> number                        the SCHEMA_VERSION of ../../public
 *
 * Images and namespaces are published to readers in other processes: their keys and records are
 * defined in ../../public.
 */
import { openServiceDB, scanPrefix, stampSchemaVersion } from "#libs/lmdb";
import { DB_FILE, SCHEMA_VERSION, type Key, type MetaDB } from "../../public";

export type { Key, MetaDB };
export { scanPrefix };

/** The images process's database under its root `dir`, recording the schema version it publishes. */
export function openMetaDB(dir: string): MetaDB {
  const db = openServiceDB<Key>(dir, DB_FILE);
  stampSchemaVersion(db, SCHEMA_VERSION);
  return db;
}
