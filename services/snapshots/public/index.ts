/**
 * What the snapshots process publishes to readers in other processes on its host (the gateway): the
 * part of its database's key schema they read (snapshot records and the mount layout of each loaded
 * snapshotter), the read-only open, and the decoders from those records to the Snapshots.Stat and
 * Snapshots.Mounts answers. The snapshots process uses these same definitions itself (its snapshotters
 * build their mounts with `mountsOf`). A reader uses them only while the database records
 * SCHEMA_VERSION (see libs/lmdb ReadView); a change to anything here that an older reader would
 * misread takes a new version.
 */
import * as path from "node:path";
import type { RootDatabase } from "lmdb";
import { openServiceDB, type Key } from "#libs/lmdb";
import { kindFromWire, kindToWire, SnapshotKinds, type Mount, type SnapshotInfo, type SnapshotKind } from "#libs/core/snapshots";
import { mountToProto } from "#libs/mount";
import type { Msg } from "#libs/grpc/server";
import type { Input } from "#libs/proto/types";
import { toTimestamp } from "#libs/proto";
import { dateFromStored } from "#libs/time";

/** The version of what this module reads and decodes; the snapshots process records it in its database. */
export const SCHEMA_VERSION = 1;

export type { Key };
export type SnapshotsDB = RootDatabase<unknown, Key>;

/** The database file under the snapshots process's root. */
export const DB_FILE = "metadata.lmdb";

/** ["s", snapshotter, ns, key] -> SnapshotRecord: one per snapshot. */
export const snapKey = (sn: string, ns: string, key: string): Key => ["s", sn, ns, key];
/** ["m", snapshotter] -> MountLayout: a snapshotter the running process has loaded. */
export const layoutKey = (sn: string): Key => ["m", sn];

/** Kind as stored: 1 view, 2 active, 3 committed (the wire numbers). */
export interface SnapshotRecord {
  id: number;
  kind: 1 | 2 | 3;
  parent: string;
  /** Backend ids of the ancestors, nearest first (fixed at creation: parents can't go away). */
  chain: number[];
  labels: Record<string, string>;
  /** bigint nanoseconds (milliseconds, a number, in older records): libs/time */
  created: bigint | number;
  updated: bigint | number;
  /** Cached usage of a committed snapshot (immutable, computed once on demand). */
  usage?: { size: number; inodes: number };
}

/** How a snapshotter lays out its snapshots, which is all its mounts depend on. */
export interface MountLayout {
  name: "overlayfs" | "native";
  root: string;
  /** overlayfs: pass index=off (the kernel has the overlay index feature). */
  indexOff?: boolean;
}

/** The database under the snapshots process's root `dir`, read-only (for a libs/lmdb ReadView). */
export function openReadOnly(dir: string): SnapshotsDB {
  return openServiceDB<Key>(dir, DB_FILE, true);
}

/** The directory of overlayfs snapshot `id`'s own layer. */
export const upperOf = (root: string, id: number): string => path.join(root, "snapshots", String(id), "fs");

/** The mounts of snapshot `id` of a snapshotter with this layout. */
export function mountsOf(l: MountLayout, id: number, kind: SnapshotKind, chain: number[]): Mount[] {
  if (l.name === "native") {
    const source = chain.length === 0 || kind === SnapshotKinds.Active ? path.join(l.root, "snapshots", String(id)) : path.join(l.root, "snapshots", String(chain[0]!));
    return [{ type: "bind", source, options: ["rbind", kind === SnapshotKinds.View ? "ro" : "rw"] }];
  }
  if (chain.length === 0) {
    return [{ type: "bind", source: upperOf(l.root, id), options: [kind === SnapshotKinds.View ? "ro" : "rw", "rbind"] }];
  }
  const options: string[] = [];
  if (l.indexOff) options.push("index=off");
  if (kind === SnapshotKinds.Active) {
    options.push(`workdir=${path.join(l.root, "snapshots", String(id), "work")}`, `upperdir=${upperOf(l.root, id)}`);
  } else if (chain.length === 1) {
    return [{ type: "bind", source: upperOf(l.root, chain[0]!), options: ["ro", "rbind"] }];
  }
  options.push(`lowerdir=${chain.map((p) => upperOf(l.root, p)).join(":")}`);
  return [{ type: "overlay", source: "overlay", options }];
}

export function infoOf(key: string, r: SnapshotRecord): SnapshotInfo {
  return { name: key, parent: r.parent, kind: kindFromWire(r.kind), labels: { ...r.labels }, created: dateFromStored(r.created), updated: dateFromStored(r.updated) };
}

/**
 * Snapshot `key` of namespace `ns` as a read of this database finds it: its info, and its mounts when it
 * is active or a view, if snapshotter `sn` is loaded and the snapshot exists; else undefined. The same
 * record and layout give the same answers the snapshotter would.
 */
export function readSnapshot(db: SnapshotsDB, sn: string, ns: string, key: string): { info: SnapshotInfo; mounts?: Mount[] } | undefined {
  const layout = db.get(layoutKey(sn)) as MountLayout | undefined;
  const r = layout && key ? (db.get(snapKey(sn, ns, key)) as SnapshotRecord | undefined) : undefined;
  if (!layout || !r) return undefined;
  const kind = kindFromWire(r.kind);
  return { info: infoOf(key, r), ...(kind !== SnapshotKinds.Committed ? { mounts: mountsOf(layout, r.id, kind, r.chain) } : {}) };
}

export function infoToProto(i: SnapshotInfo): Input["containerd.services.snapshots.v1.Info"] {
  return { name: i.name, parent: i.parent, kind: kindToWire(i.kind), created_at: toTimestamp(i.created), updated_at: toTimestamp(i.updated), labels: i.labels };
}

/** Snapshots.Stat from a read-only view of the database: the info when found, else undefined (the owner answers). */
export function statFromView(db: SnapshotsDB, ns: string, req: Msg): Msg | undefined {
  const s = readSnapshot(db, String(req.snapshotter ?? ""), ns, String(req.key ?? ""));
  return s && { info: infoToProto(s.info) };
}

/** Snapshots.Mounts from a read-only view: the mounts of an active snapshot or view when found, else undefined. */
export function mountsFromView(db: SnapshotsDB, ns: string, req: Msg): Msg | undefined {
  const m = readSnapshot(db, String(req.snapshotter ?? ""), ns, String(req.key ?? ""))?.mounts;
  return m && { mounts: m.map(mountToProto) };
}
