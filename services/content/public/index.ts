/**
 * What the content process publishes to readers in other processes on its host (the gateway): the part
 * of its database's key schema they read, the read-only open, the decoder from a stored blob record to
 * the Content.Info answer, and where a committed blob's bytes are. The content process uses these same
 * definitions itself. A reader uses them only while the database records SCHEMA_VERSION (see libs/lmdb
 * ReadView); a change to anything here that an older reader would misread takes a new version.
 */
import * as path from "node:path";
import type { RootDatabase } from "lmdb";
import { openServiceDB, type Key } from "#libs/lmdb";
import { isValidDigest, type ContentInfo } from "#libs/core/content";
import type { Msg } from "#libs/grpc/server";
import type { Input } from "#libs/proto/types";
import { toTimestamp } from "#libs/proto";
import { dateFromStored } from "#libs/time";

/** The version of what this module reads and decodes; the content process records it in its database. */
export const SCHEMA_VERSION = 1;

export type { Key };
export type ContentDB = RootDatabase<unknown, Key>;

/** The database file under the content process's root. */
export const DB_FILE = "meta.lmdb";

/** ["b", ns, digest] -> BlobRecord: blob `digest` is visible in namespace `ns`. */
export const blobKey = (ns: string, digest: string): Key => ["b", ns, digest];

export interface BlobRecord {
  size: number;
  /** bigint nanoseconds since the epoch (a number of milliseconds in older records): see libs/time */
  created: bigint | number;
  updated: bigint | number;
  labels: Record<string, string>;
}

/** The database under the content process's root `dir`, read-only (for a libs/lmdb ReadView). */
export function openReadOnly(dir: string): ContentDB {
  return openServiceDB<Key>(dir, DB_FILE, true);
}

/** Where the content process rooted at `root` keeps the bytes of committed blob `digest` (containerd's blobs/<algorithm>/<hex>). */
export function blobFile(root: string, digest: string): string {
  const i = digest.indexOf(":");
  return path.join(root, "blobs", digest.slice(0, i), digest.slice(i + 1));
}

export const toInfo = (digest: string, r: BlobRecord): ContentInfo => ({
  digest,
  size: r.size,
  createdAt: dateFromStored(r.created),
  updatedAt: dateFromStored(r.updated),
  labels: { ...r.labels },
});

/** The info of blob `digest` in namespace `ns`, if stored. */
export function readInfo(db: ContentDB, ns: string, digest: string): ContentInfo | undefined {
  const r = db.get(blobKey(ns, digest)) as BlobRecord | undefined;
  return r && toInfo(digest, r);
}

export function infoToProto(i: ContentInfo): Input["containerd.services.content.v1.Info"] {
  return { digest: i.digest, size: i.size, created_at: toTimestamp(i.createdAt), updated_at: toTimestamp(i.updatedAt), labels: i.labels };
}

/**
 * Content.Info from a read-only view of the database: the answer when the blob is there; otherwise
 * undefined, and the content process answers.
 */
export function infoFromView(db: ContentDB, ns: string, req: Msg): Msg | undefined {
  const digest = String(req.digest ?? "");
  const info = isValidDigest(digest) ? readInfo(db, ns, digest) : undefined;
  return info && { info: infoToProto(info) };
}
