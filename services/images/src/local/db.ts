/**
 * The images process's metadata database: LMDB (via the `lmdb` package). LMDB commits are atomic and
 * fsync'ed copy-on-write B-tree transactions, so a crash at any moment leaves the last committed state.
 */
import * as path from "node:path";
import { open, type RootDatabase } from "lmdb";

export type MetaDB = RootDatabase<unknown, (string | number)[]>;

export function openMetaDB(dir: string): MetaDB {
  return open<unknown, (string | number)[]>({ path: path.join(dir, "meta.lmdb"), compression: false, encoding: "msgpack" });
}
