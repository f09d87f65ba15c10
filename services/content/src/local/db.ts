/**
 * The content process's metadata: LMDB (the `lmdb` package). LMDB commits are atomic copy-on-write
 * B-tree transactions, synced before they resolve (libs/lmdb writeTxn); after a crash (kill -9 or
 * power loss) the database opens at the last committed state, never a torn one. Blob bytes live in
 * files; this holds who owns them.
 *
 * Keys (ordered-binary arrays); an ingest ref, of any length as in containerd, is keyed by nameKey
 * (a long one by its digest, the whole ref then kept in the value):
 *   ["b", ns, digest]               -> BlobRecord     a blob visible in namespace ns
 *   ["o", digest, ns]               -> 1              owners index: which namespaces hold digest
 *   ["i", ns, nameKey(ref)]         -> IngestRecord   an unfinished write
 *   ["s", digest, ns, nameKey(ref)] -> 1              an ingest sharing the blob `digest` from another namespace
 *   ["l", ns, lease, type, nameKey(id)] -> 1 or id    a resource held by a lease (see LeaseResourceRecorder)
 */
import type { RootDatabase } from "lmdb";
import { isDigestedName, nameKey, openServiceDB } from "../../../../libs/lmdb";
import type { ContentInfo } from "../../../../libs/core/content";
import { dateFromStored } from "../../../../libs/time";

export type Key = (string | number)[];
export type ContentDB = RootDatabase<unknown, Key>;

export interface BlobRecord {
  size: number;
  /** bigint nanoseconds since the epoch (a number of milliseconds in older records): see libs/time */
  created: bigint | number;
  updated: bigint | number;
  labels: Record<string, string>;
}

export interface IngestRecord {
  /** The ref, when the key holds its digest. */
  ref?: string;
  /** Directory name under ingest/. */
  dir: string;
  /** Expected total, 0 when unknown. */
  total: number;
  /** Set for a shared ingest: the blob exists on disk (owned by another namespace) and needs no data. */
  expected: string;
  /** As BlobRecord's times. */
  started: bigint | number;
  /** Lease holding the ingest, if any. */
  lease?: string;
  /** When an unleased ingest may be garbage collected (epoch ms), as containerd's 24 h expiry. */
  expires?: number;
}

export const toInfo = (digest: string, r: BlobRecord): ContentInfo => ({
  digest,
  size: r.size,
  createdAt: dateFromStored(r.created),
  updatedAt: dateFromStored(r.updated),
  labels: { ...r.labels },
});

/** The info of blob `digest` in namespace `ns`, if stored (also read by the gateway's view of this database). */
export function readInfo(db: ContentDB, ns: string, digest: string): ContentInfo | undefined {
  const r = db.get(blobKey(ns, digest)) as BlobRecord | undefined;
  return r && toInfo(digest, r);
}

export const blobKey = (ns: string, digest: string): Key => ["b", ns, digest];
export const ownerKey = (digest: string, ns: string): Key => ["o", digest, ns];
export const ingestKey = (ns: string, ref: string): Key => ["i", ns, nameKey(ref)];
export const sharedKey = (digest: string, ns: string, ref: string): Key => ["s", digest, ns, nameKey(ref)];
export const leaseKey = (ns: string, lease: string, type: string, id: string): Key => ["l", ns, lease, type, nameKey(id)];
/** The value of a lease record: the resource id when the key holds its digest. */
export const leaseValue = (id: string): string | 1 => (isDigestedName(id) ? id : 1);
/** An ingest record to store under `ref`'s key. */
export const ingestRecord = (ref: string, rec: IngestRecord): IngestRecord => (isDigestedName(ref) ? { ...rec, ref } : rec);
/** The ref of an ["i", ns, ...] entry. */
export const ingestRef = (key: Key, rec: IngestRecord): string => rec.ref ?? String(key[2]);
/** The resource id of an ["l", ...] entry. */
export const leasedId = (key: Key, value: unknown): string => (typeof value === "string" ? value : String(key[4]));

/** The database under `dir`; `readOnly` for a view from another process (see libs/lmdb ReadView). */
export function openContentDB(dir: string, readOnly = false): ContentDB {
  return openServiceDB<Key>(dir, "meta.lmdb", readOnly);
}

/** Iterate the entries whose key starts with `prefix` (compared element-wise). */
export function* scanPrefix<V>(db: ContentDB, prefix: Key): Generator<{ key: Key; value: V }> {
  for (const { key, value } of db.getRange({ start: prefix })) {
    const k = key as Key;
    for (let i = 0; i < prefix.length; i++) if (k[i] !== prefix[i]) return;
    yield { key: k, value: value as V };
  }
}

/** True when any namespace owns `digest`. */
export function hasOwner(db: ContentDB, digest: string): boolean {
  for (const _ of scanPrefix(db, ["o", digest])) return true;
  return false;
}

/** True when any lease record in `ns` holds the resource (`content` digest or `ingests` ref). */
export function heldByLease(db: ContentDB, ns: string, type: string, id: string): boolean {
  const k = nameKey(id);
  for (const { key } of scanPrefix(db, ["l", ns])) if (key[3] === type && key[4] === k) return true;
  return false;
}
