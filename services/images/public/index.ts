/**
 * What the images process publishes to readers in other processes on its host (the gateway): the part
 * of its database's key schema they read (images and namespaces), the read-only open, and the decoders
 * from stored records to the Images.Get and Namespaces.Get answers. The images process uses these same
 * definitions itself. A reader uses them only while the database records SCHEMA_VERSION (see libs/lmdb
 * ReadView); a change to anything here that an older reader would misread takes a new version.
 */
import type { RootDatabase } from "lmdb";
import { nameKey, openServiceDB, type Key } from "#libs/lmdb";
import type { Image } from "#libs/core/images";
import type { Namespace } from "#libs/core/namespaces";
import { descriptorToProto } from "#libs/clients/images";
import type { Msg } from "#libs/grpc/server";
import type { Input } from "#libs/proto/types";
import { toTimestamp } from "#libs/proto";
import { dateFromStored } from "#libs/time";

/** The version of what this module reads and decodes; the images process records it in its database. */
export const SCHEMA_VERSION = 1;

export type { Key };
export type MetaDB = RootDatabase<unknown, Key>;

/** The database file under the images process's root. */
export const DB_FILE = "meta.lmdb";

/** ["img", ns, nameKey(name)] -> StoredImage (a long name is keyed by its digest, the record keeps the name). */
export const imageKey = (ns: string, name: string): Key => ["img", ns, nameKey(name)];
/** ["ns", name] -> StoredNamespace. */
export const namespaceKey = (name: string): Key => ["ns", name];

export interface StoredImage {
  /** The name, when the key holds its digest (see nameKey). */
  name?: string;
  labels: Record<string, string>;
  target: { mediaType: string; digest: string; size: number; annotations: Record<string, string> };
  /** bigint nanoseconds (milliseconds, a number, in older records): libs/time */
  created: bigint | number;
  updated: bigint | number;
}

export interface StoredNamespace {
  labels: Record<string, string>;
  /** bigint nanoseconds (milliseconds, a number, in older records): libs/time */
  created_at: bigint | number;
}

/** The database under the images process's root `dir`, read-only (for a libs/lmdb ReadView). */
export function openReadOnly(dir: string): MetaDB {
  return openServiceDB<Key>(dir, DB_FILE, true);
}

/** The stored record of image `name`, if any. */
export function storedImage(db: MetaDB, ns: string, name: string): StoredImage | undefined {
  const s = name ? (db.get(imageKey(ns, name)) as StoredImage | undefined) : undefined;
  return s && (s.name ?? name) === name ? s : undefined;
}

export function toImage(name: string, s: StoredImage): Image {
  return {
    name,
    labels: { ...s.labels },
    target: { mediaType: s.target.mediaType, digest: s.target.digest, size: s.target.size, annotations: { ...s.target.annotations } },
    createdAt: dateFromStored(s.created),
    updatedAt: dateFromStored(s.updated),
  };
}

/** The image `name` of namespace `ns`, if stored. */
export function readImage(db: MetaDB, ns: string, name: string): Image | undefined {
  const s = storedImage(db, ns, name);
  return s && toImage(name, s);
}

/** The namespace `name`, if stored. */
export function readNamespace(db: MetaDB, name: string): Namespace | undefined {
  const v = db.get(namespaceKey(name)) as StoredNamespace | undefined;
  return v && { name, labels: v.labels };
}

export const imageToProto = (i: Image): Input["containerd.services.images.v1.Image"] => ({
  name: i.name,
  labels: i.labels,
  target: descriptorToProto(i.target),
  created_at: toTimestamp(i.createdAt),
  updated_at: toTimestamp(i.updatedAt),
});

export const namespaceToProto = (n: Namespace): Input["containerd.services.namespaces.v1.Namespace"] => ({ name: n.name, labels: n.labels });

/** Images.Get from a read-only view of the database: the image when stored, else undefined (the owner answers). */
export function imageFromView(db: MetaDB, ns: string, req: Msg): Msg | undefined {
  const img = readImage(db, ns, String(req.name ?? ""));
  return img && { image: imageToProto(img) };
}

/** Namespaces.Get from a read-only view of the database: the namespace when stored, else undefined (the owner answers). */
export function namespaceFromView(db: MetaDB, _ns: string | undefined, req: Msg): Msg | undefined {
  const n = req.name ? readNamespace(db, String(req.name)) : undefined;
  return n && { namespace: namespaceToProto(n) };
}
