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
 *   ["schema_version"]              -> number         the SCHEMA_VERSION of ../../public (libs/lmdb)
 */
import { isDigestedName, nameKey, openServiceDB, scanPrefix, stampSchemaVersion } from "#libs/lmdb";
import { DB_FILE, SCHEMA_VERSION, type ContentDB, type Key } from "../../public";

// The published part of the schema (the blob records the gateway reads) lives in ../../public.
export { blobKey, readInfo, toInfo, type BlobRecord, type ContentDB, type Key } from "../../public";
export { scanPrefix };

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

/** The content process's database under its root `dir`, recording the schema version it publishes. */
export function openContentDB(dir: string): ContentDB {
  const db = openServiceDB<Key>(dir, DB_FILE);
  stampSchemaVersion(db, SCHEMA_VERSION);
  return db;
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
