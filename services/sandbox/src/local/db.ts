/**
 * The sandbox process's database: LMDB (the `lmdb` package). Commits are atomic copy-on-write
 * transactions, so after kill -9 the database opens at the last committed state.
 *
 * Keys (ordered-binary arrays):
 *   ["sb", ns, id]     -> StoredSandbox     Store records (containerd.services.sandbox.v1.Store)
 *   ["pod", ns, id]    -> PodRecord         podsandbox controller state (network, pause task, exit)
 *   ["shim", ns, id]   -> ShimRecord        shim controller state (bundle, shim address)
 */
import type { RootDatabase } from "lmdb";
import { openServiceDB, scanPrefix } from "#libs/lmdb";

export type Key = (string | number)[];
export type SandboxDB = RootDatabase<unknown, Key>;

export function openSandboxDB(dir: string): SandboxDB {
  return openServiceDB<Key>(dir);
}

export { scanPrefix };

/** A typed value as stored (msgpack keeps the bytes). */
export interface StoredAny {
  t: string;
  v: Uint8Array;
}
