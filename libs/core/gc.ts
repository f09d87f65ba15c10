/**
 * Garbage collection: containerd's reachability rules (metadata/gc.go) as pure functions, and the
 * contracts of the collector and its scheduler. The images process runs the collector across every
 * process that holds data; see services/images/src/local/gc/.
 *
 * Rules:
 * - Roots: images (target digest + their gc.ref labels); containers (snapshotter/snapshot_key + their
 *   gc.ref labels); unexpired leases (everything they hold, plus their gc.ref labels); content and
 *   snapshots labelled `containerd.io/gc.root`; ingests (their expected digest).
 * - References: content and snapshot labels `containerd.io/gc.ref.content[.|/<name>]` -> content,
 *   `containerd.io/gc.ref.snapshot.<snapshotter>[/<name>]` -> snapshot; a snapshot -> its parent.
 *   A lease labelled `containerd.io/gc.flat` holds its resources without following their references
 *   (snapshot parents are still followed).
 * - Everything a root does not reach is deleted by the process that owns it; expired leases are deleted.
 *
 * No runtime dependencies: types, constants and pure helpers only.
 */
import type { CallContext } from "../context";

export const GC_LABELS = {
  root: "containerd.io/gc.root",
  contentRef: "containerd.io/gc.ref.content",
  snapshotRefPrefix: "containerd.io/gc.ref.snapshot.",
  expire: "containerd.io/gc.expire",
  flat: "containerd.io/gc.flat",
} as const;

/**
 * Metadata header the collector puts on the deletes of its sweep (`Content/Delete`, `Snapshots/Remove`,
 * `Content/Abort`) with the pass id as value. An owning process that sees it SHOULD refuse the delete
 * (FailedPrecondition, message ending in "is leased") when the resource is held by any lease record,
 * checked in the same transaction as the delete: that closes the window between the collector reading
 * the lease records and its delete, in which a write (e.g. Content/Write of a blob that already
 * exists) can add the resource to a lease. A process that ignores the header is still correct
 * outside that window.
 */
export const GC_SWEEP_HEADER = "flotilla-gc-sweep";

/** A snapshot as the collector names it: snapshotter plus key. */
export interface SnapshotRef {
  snapshotter: string;
  key: string;
}

export interface LabelRefs {
  content: string[];
  snapshots: SnapshotRef[];
}

/** The content and snapshot references a label map carries (containerd's sendLabelRefs). */
export function labelRefs(labels: Record<string, string> | undefined): LabelRefs {
  const out: LabelRefs = { content: [], snapshots: [] };
  if (!labels) return out;
  const cref = GC_LABELS.contentRef;
  for (const [k, v] of Object.entries(labels)) {
    if (k.startsWith(cref)) {
      if (k.length === cref.length || k[cref.length] === "." || k[cref.length] === "/") out.content.push(v);
    } else if (k.startsWith(GC_LABELS.snapshotRefPrefix)) {
      let sn = k.slice(GC_LABELS.snapshotRefPrefix.length);
      const i = sn.indexOf("/");
      if (i >= 0) sn = sn.slice(0, i);
      out.snapshots.push({ snapshotter: sn, key: v });
    }
  }
  return out;
}

/** True when the labels make the object a root (`containerd.io/gc.root` present, any value). */
export function isRootLabelled(labels: Record<string, string> | undefined): boolean {
  return !!labels && GC_LABELS.root in labels;
}

/**
 * A lease's `containerd.io/gc.expire` (RFC 3339): the expiry time, `undefined` without the label, or
 * "invalid" when it does not parse (containerd then ignores it and keeps the lease).
 */
export function leaseExpiry(labels: Record<string, string> | undefined): Date | undefined | "invalid" {
  const v = labels?.[GC_LABELS.expire];
  if (v === undefined) return undefined;
  if (!/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/.test(v)) return "invalid";
  const t = Date.parse(v);
  return Number.isNaN(t) ? "invalid" : new Date(t);
}

export function leaseExpired(labels: Record<string, string> | undefined, now: Date): boolean {
  const e = leaseExpiry(labels);
  return e instanceof Date && now.getTime() > e.getTime();
}

export function isFlatLease(labels: Record<string, string> | undefined): boolean {
  return !!labels && GC_LABELS.flat in labels;
}

// ---- the mark phase over one namespace ----

export const snapshotNode = (snapshotter: string, key: string): string => `s:${snapshotter}/${key}`;
export const contentNode = (digest: string): string => `c:${digest}`;

export interface GraphSnapshot {
  snapshotter: string;
  key: string;
  parent: string;
  labels: Record<string, string>;
}

/** What the collector knows about one namespace: every object, and what makes some of them live. */
export interface NamespaceGraph {
  content: Map<string, Record<string, string>>;
  /** by snapshotNode(snapshotter, key) */
  snapshots: Map<string, GraphSnapshot>;
  roots: {
    content: string[];
    snapshots: SnapshotRef[];
    /** Held by flat leases: marked, references not followed (parents are). */
    flatContent: string[];
    flatSnapshots: SnapshotRef[];
    /** Label maps whose gc.ref labels are roots (images, containers, leases). */
    labels: Record<string, string>[];
  };
}

export function emptyGraph(): NamespaceGraph {
  return { content: new Map(), snapshots: new Map(), roots: { content: [], snapshots: [], flatContent: [], flatSnapshots: [], labels: [] } };
}

/** Everything reachable in the graph: a set of contentNode/snapshotNode keys. */
export function markReachable(g: NamespaceGraph): Set<string> {
  const marked = new Set<string>();
  const stack: { node: string; flat: boolean }[] = [];
  const pushContent = (d: string, flat = false): void => void stack.push({ node: contentNode(d), flat });
  const pushSnap = (r: SnapshotRef, flat = false): void => void stack.push({ node: snapshotNode(r.snapshotter, r.key), flat });
  const pushLabels = (labels: Record<string, string>): void => {
    const refs = labelRefs(labels);
    for (const c of refs.content) pushContent(c);
    for (const s of refs.snapshots) pushSnap(s);
  };
  for (const c of g.roots.content) pushContent(c);
  for (const s of g.roots.snapshots) pushSnap(s);
  for (const c of g.roots.flatContent) pushContent(c, true);
  for (const s of g.roots.flatSnapshots) pushSnap(s, true);
  for (const l of g.roots.labels) pushLabels(l);
  for (const [d, labels] of g.content) if (isRootLabelled(labels)) pushContent(d);
  for (const s of g.snapshots.values()) if (isRootLabelled(s.labels)) pushSnap(s);
  // A flat visit marks the node only; a later full visit of the same node still follows its labels.
  const expanded = new Set<string>();
  while (stack.length) {
    const { node, flat } = stack.pop()!;
    marked.add(node);
    if (node.startsWith("s:")) {
      const s = g.snapshots.get(node);
      if (!s) continue;
      if (!expanded.has(node + (flat ? "#f" : ""))) {
        expanded.add(node + (flat ? "#f" : ""));
        if (s.parent) pushSnap({ snapshotter: s.snapshotter, key: s.parent }, flat);
        if (!flat) pushLabels(s.labels);
      }
    } else if (!flat && !expanded.has(node)) {
      expanded.add(node);
      const labels = g.content.get(node.slice(2));
      if (labels) pushLabels(labels);
    }
  }
  return marked;
}

// ---- contracts ----

export interface GCStats {
  /** Pass id (monotonic within the process). */
  pass: number;
  startedAt: Date;
  elapsedMs: number;
  freed: { content: number; snapshots: number; ingests: number; leases: number };
  /** Why parts of the pass were skipped (e.g. `content: unavailable`), empty when nothing was. */
  skipped: string[];
  /** Time spent per phase (read objects, read leases, read roots, mark and sweep), when measured. */
  phasesMs?: Record<string, number>;
}

export interface GarbageCollector {
  /** One mark-and-sweep pass over every namespace. */
  collect(ctx: CallContext): Promise<GCStats>;
}

/**
 * The phases of a pass, in order: "start" (which snapshotters are loaded), "read" (every object, and
 * the roots: images, containers, sandboxes), "leases" (leases and what they hold), "sweep".
 */
export const GC_PHASES = ["start", "read", "leases", "sweep"] as const;
export type GCPhase = (typeof GC_PHASES)[number];
/** What a sync deletion needs a pass to read after it: leases (read in "leases"), images (in "read"). */
export type GCReadPhase = "leases" | "images";

export interface GCScheduler {
  /**
   * Note a deletion in `namespace` (all namespaces when absent): a pass is scheduled (debounced, at
   * most as often as the pause threshold allows).
   */
  markDirty(namespace?: string): void;
  /** Note a mutation (counts towards the mutation threshold). */
  markMutation(namespace?: string): void;
  /**
   * Run a pass soon, covering at least the context's namespace, and resolve with the stats of the
   * first pass that reads `after` (the kind of object just deleted: "images" by default, or "leases")
   * after this call. A pass already running that has not read that kind yet serves.
   */
  scheduleAndWait(ctx: CallContext, after?: GCReadPhase): Promise<GCStats>;
}
