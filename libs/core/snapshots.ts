/**
 * Snapshots: containerd's snapshotter contract (snapshots.Snapshotter), as seen by clients.
 *
 * One interface with two implementations: the local snapshotters in the snapshots process
 * (services/snapshots/src/local: `overlayfs` and `native`) and `SnapshotterProxy` over gRPC
 * (libs/clients/snapshots.ts). Both pass the same conformance suite (test/snapshots/suite.ts).
 *
 * Keys are namespaced: every method requires the call's namespace (FailedPrecondition without one) and
 * sees only that namespace's snapshots. A snapshot is `active` (writable, from Prepare), `view`
 * (read-only, from View) or `committed` (immutable, from Commit; the only kind that can be a parent).
 *
 * No runtime dependencies: types, constants and pure helpers only.
 */
import type { CallContext } from "../context";
import type { LeaseResource, LeaseResourceHolder } from "./leases";
import type { Mount } from "../mount";

export const SnapshotKinds = {
  View: "view",
  Active: "active",
  Committed: "committed",
} as const;
export type SnapshotKind = (typeof SnapshotKinds)[keyof typeof SnapshotKinds];

export interface SnapshotInfo {
  /** The key (active, view) or name (committed). */
  name: string;
  /** Name of the committed parent, "" for none. */
  parent: string;
  kind: SnapshotKind;
  labels: Record<string, string>;
  created: Date;
  updated: Date;
}

export interface SnapshotUsage {
  /** Bytes of disk the snapshot's own changes take (allocated blocks). */
  size: number;
  /** Inodes the snapshot's own changes take. */
  inodes: number;
}

/** A filesystem mount, as containerd hands it around (its home is libs/mount). */
export type { Mount };

export interface SnapshotOptions {
  labels?: Record<string, string>;
}

export type WalkFn = (info: SnapshotInfo) => void | Promise<void>;

export interface Snapshotter {
  /**
   * Information about the snapshot `key` (active, view or committed). NotFound when absent.
   */
  stat(ctx: CallContext, key: string): Promise<SnapshotInfo>;
  /**
   * Update mutable fields. `paths` are field-mask paths: `labels` (replace) or `labels.<key>` (set one;
   * empty or missing value deletes it); no paths replaces the labels. InvalidArgument for other paths
   * or an empty name; NotFound when absent.
   */
  update(ctx: CallContext, info: Pick<SnapshotInfo, "name" | "labels">, paths?: readonly string[]): Promise<SnapshotInfo>;
  /** Disk usage of the snapshot's own changes (not its parents'). NotFound when absent. */
  usage(ctx: CallContext, key: string): Promise<SnapshotUsage>;
  /** The mounts of an active or view snapshot (again). NotFound when absent; FailedPrecondition for a committed one. */
  mounts(ctx: CallContext, key: string): Promise<Mount[]>;
  /**
   * A new active snapshot `key` on top of the committed `parent` ("" for none), returning its mounts.
   * AlreadyExists when `key` exists; NotFound when `parent` does not; InvalidArgument when `parent` is not
   * committed or `key` is empty.
   */
  prepare(ctx: CallContext, key: string, parent: string, opts?: SnapshotOptions): Promise<Mount[]>;
  /** Like prepare, but read-only (a view). Views can't be committed. */
  view(ctx: CallContext, key: string, parent: string, opts?: SnapshotOptions): Promise<Mount[]>;
  /**
   * Commit the active snapshot `key` as `name` (labels only from `opts`); `key` is gone afterwards.
   * AlreadyExists when `name` exists; NotFound when `key` does not; FailedPrecondition when `key` is not active.
   */
  commit(ctx: CallContext, name: string, key: string, opts?: SnapshotOptions): Promise<void>;
  /** Remove a snapshot. NotFound when absent; FailedPrecondition when it has children. */
  remove(ctx: CallContext, key: string): Promise<void>;
  /**
   * Call `fn` for every snapshot of the namespace matching any of `filters` (fields `kind`, `name`,
   * `parent`, `labels.<key>`), in key order.
   */
  walk(ctx: CallContext, fn: WalkFn, filters?: readonly string[]): Promise<void>;
  /** Release disk space of removed or abandoned snapshots. */
  cleanup(ctx: CallContext): Promise<void>;
}

/** The snapshotters one process offers, by name (`overlayfs`, `native`). */
export interface SnapshotterSet {
  /** NotFound ("snapshotter not loaded: <name>") for an unknown name; InvalidArgument for "". */
  get(name: string): Snapshotter;
  names(): string[];
}

/** The lease resource type for a snapshot of `snapshotter` (containerd: `snapshots/<snapshotter>`, id = key). */
export function snapshotLeaseResourceType(snapshotter: string): string {
  return `snapshots/${snapshotter}`;
}

export type { LeaseResource };

/**
 * Which snapshots a lease holds. Snapshots prepared, viewed or committed with `ctx.lease` set (the
 * `containerd-lease` header) are recorded as `{type: "snapshots/<snapshotter>", id: key}` under that
 * lease in the same transaction that creates them; commit moves the record from the key to the name;
 * remove drops it. Garbage collection (in the images process, which owns leases) must keep
 * every snapshot listed here while the lease lives and call `deleteLease` once the lease is gone.
 * The snapshots process serves its records as every owning process does (libs/leaseholder).
 */
export type SnapshotLeaseRecorder = LeaseResourceHolder;

export const SNAPSHOT_EVENTS = {
  prepare: { topic: "/snapshot/prepare", type: "containerd.events.SnapshotPrepare" },
  commit: { topic: "/snapshot/commit", type: "containerd.events.SnapshotCommit" },
  remove: { topic: "/snapshot/remove", type: "containerd.events.SnapshotRemove" },
} as const;

/** Labels whose key starts with this are passed on to the backend in containerd; kept for reference. */
export const INHERITED_LABEL_PREFIX = "containerd.io/snapshot/";

/** Kind <-> wire enum (containerd.services.snapshots.v1.Kind: UNKNOWN 0, VIEW 1, ACTIVE 2, COMMITTED 3). */
export function kindToWire(k: SnapshotKind): number {
  switch (k) {
    case SnapshotKinds.View: return 1;
    case SnapshotKinds.Active: return 2;
    case SnapshotKinds.Committed: return 3;
  }
}

export function kindFromWire(n: number): SnapshotKind {
  return n === 1 ? SnapshotKinds.View : n === 2 ? SnapshotKinds.Active : SnapshotKinds.Committed;
}
