/**
 * The garbage collector: one mark-and-sweep pass across every process that holds data, with
 * containerd's rules (libs/core/gc.ts).
 *
 * Nothing is locked across processes, so the order of reads is what keeps the pass safe. Lease
 * deletions are held back (MarkGate) for the whole read window, since a deletion hands protection over
 * to what the client made under the lease (an image, a container, labels on content); inside it:
 * 1. every object (content with labels, ingests, snapshots with parents and labels), alongside the
 *    roots: images, containers, sandboxes (made before the lease that protected their parts goes, so
 *    before the window, or protected by a lease that is still there);
 * 2. then the leases and what they hold: every object of step 1 existed before this read, so if a
 *    lease held it then, this read sees that.
 * An object created after step 1 is not in the pass at all, so it cannot be swept. Just before the
 * sweep the leases are read again (a write can add an existing object to a lease at any time), and the
 * deletes carry GC_SWEEP_HEADER so an owning process can refuse a leased object atomically.
 * A namespace is swept only when every source answered: a process that is down makes the pass skip
 * that namespace's data (never guess).
 */
import type { Logger } from "pino";
import { background, type CallContext } from "#libs/context";
import { causeText, isFailedPrecondition, isNotFound } from "#libs/errdefs";
import {
  contentNode,
  emptyGraph,
  isFlatLease,
  leaseExpired,
  markReachable,
  snapshotNode,
  type GarbageCollector,
  type GCPhase,
  type GCStats,
  type GraphSnapshot,
  type NamespaceGraph,
} from "#libs/core/gc";
import type { Image } from "#libs/core/images";
import type { Lease, LeaseResource } from "#libs/core/leases";
import type { MarkGate } from "./gate";
import type { ContainerObject, ContentObject, GCSources, IngestObject } from "./sources";

export interface CollectorStores {
  namespaces(): string[];
  images(ns: string): Image[];
  leases(ns: string): Lease[];
  /** What a lease holds across processes (throws when a holder cannot answer). */
  heldBy(ctx: CallContext, lease: string): Promise<LeaseResource[]>;
  removeExpiredLease(ctx: CallContext, ns: string, lease: Lease): Promise<boolean>;
  retryForgets(ctx: CallContext): Promise<number>;
}

export interface CollectorOptions {
  sources: GCSources;
  stores: CollectorStores;
  gate: MarkGate;
  log?: Logger;
  /** An ingest no live lease holds is aborted once idle this long (containerd: 24 h). */
  ingestIdleMs?: number;
  /** Deadline of each call to another process. */
  rpcTimeoutMs?: number;
  /** Parallel calls per phase. */
  concurrency?: number;
  now?: () => Date;
}

type Result<T> = { ok: true; value: T } | { ok: false; why: string };

async function attempt<T>(what: string, fn: () => Promise<T>): Promise<Result<T>> {
  try {
    return { ok: true, value: await fn() };
  } catch (e) {
    return { ok: false, why: `${what}: ${causeText(e)}` };
  }
}

async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (t: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    for (;;) {
      const i = next++;
      if (i >= items.length) return;
      out[i] = await fn(items[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

interface Universe {
  content: Result<ContentObject[]>;
  ingests: Result<IngestObject[]>;
  snapshots: Result<GraphSnapshot[]>;
}

interface LeaseView {
  expired: Lease[];
  held: Result<{ lease: Lease; resources: LeaseResource[] }[]>;
}

interface Roots {
  images: Image[];
  containers: Result<ContainerObject[]>;
  sandboxes: Result<Record<string, string>[]>;
}

const DAY = 24 * 3600 * 1000;

/** Where the running pass is: which namespaces it covers and what it is doing. */
export interface PassProgress {
  pass: number;
  only?: ReadonlySet<string>;
  phase: GCPhase;
}

export class Collector implements GarbageCollector {
  private pass = 0;
  private readonly swept = new Map<string, number>();
  private current?: PassProgress;

  /** The running pass, if any. */
  progress(): PassProgress | undefined {
    return this.current;
  }

  constructor(private readonly opts: CollectorOptions) {}

  private ctxFor(ns: string, parent: CallContext): CallContext {
    return { ...parent, namespace: ns, lease: undefined, deadline: new Date(Date.now() + (this.opts.rpcTimeoutMs ?? 30000)) };
  }

  /** True when the collector itself removed this object lately (its delete event is no reason for another pass). */
  sweptRecently(ns: string, kind: "content" | "snapshot", id: string): boolean {
    const k = `${ns}\0${kind}\0${id}`;
    const t = this.swept.get(k);
    return t !== undefined && Date.now() - t < 60000;
  }

  private noteSwept(ns: string, kind: "content" | "snapshot", id: string): void {
    const now = Date.now();
    if (this.swept.size > 10000) for (const [k, t] of this.swept) if (now - t > 60000) this.swept.delete(k);
    this.swept.set(`${ns}\0${kind}\0${id}`, now);
  }

  async collect(parent: CallContext = background(), only?: ReadonlySet<string>): Promise<GCStats> {
    const pass = ++this.pass;
    this.current = { pass, only, phase: "start" };
    try {
      return await this.run(parent, pass, only);
    } finally {
      this.current = undefined;
    }
  }

  private async run(parent: CallContext, pass: number, only?: ReadonlySet<string>): Promise<GCStats> {
    const startedAt = new Date();
    const t0 = process.hrtime.bigint();
    const stats: GCStats = { pass, startedAt, elapsedMs: 0, freed: { content: 0, snapshots: 0, ingests: 0, leases: 0 }, skipped: [] };
    const { sources, stores } = this.opts;
    const limit = this.opts.concurrency ?? 8;
    const all = stores.namespaces();
    const nss = only ? all.filter((n) => only.has(n)) : all;

    const snapshotters = await attempt("snapshots", () => sources.snapshots.snapshotters(this.ctxFor("", parent)));
    if (!snapshotters.ok) {
      // Every namespace would be skipped: only expired leases go (they are this process's own data).
      stats.skipped.push(snapshotters.why);
      for (const ns of nss) {
        for (const l of stores.leases(ns).filter((x) => leaseExpired(x.labels, this.now()))) {
          if (await stores.removeExpiredLease(this.ctxFor(ns, parent), ns, l).catch(() => false)) stats.freed.leases++;
        }
      }
      stats.elapsedMs = Number(process.hrtime.bigint() - t0) / 1e6;
      return stats;
    }

    const phases: Record<string, number> = {};
    let mark = t0;
    /** `done` has finished; `next` starts. */
    const lap = (done: GCPhase, next?: GCPhase): void => {
      const t = process.hrtime.bigint();
      phases[done] = Math.round(Number(t - mark) / 1e4) / 100;
      mark = t;
      if (next && this.current) this.current.phase = next;
    };
    stats.phasesMs = phases;
    lap("start", "read");
    // Everything is read with lease deletions held back; objects before leases.
    const { universes, leaseViews, roots } = await this.opts.gate.exclusive(async () => {
      const readRoots = mapLimit(nss, limit, async (ns): Promise<Roots> => {
        const images = stores.images(ns);
        const ctx = this.ctxFor(ns, parent);
        const [containers, sandboxes] = await Promise.all([
          attempt("containers", () => sources.roots.containers(ctx)),
          attempt("sandboxes", () => sources.roots.sandboxes(ctx)),
        ]);
        return { images, containers, sandboxes };
      });
      const universes = await mapLimit(nss, limit, (ns) => this.readUniverse(this.ctxFor(ns, parent), snapshotters));
      const roots = await readRoots;
      lap("read", "leases");
      const now = this.now();
      const leaseViews = await mapLimit(nss, limit, (ns) => this.readLeases(this.ctxFor(ns, parent), ns, now));
      lap("leases", "sweep");
      return { universes, leaseViews, roots };
    });

    // Dead leases' records go before the sweep: an owning process that honours GC_SWEEP_HEADER
    // refuses to delete what any record still holds.
    await stores.retryForgets(this.ctxFor("", parent)).catch(() => undefined);
    for (let i = 0; i < nss.length; i++) {
      const ns = nss[i]!;
      const ctx = this.ctxFor(ns, parent);
      const lv = leaseViews[i]!;
      for (const l of lv.expired) {
        try {
          if (await stores.removeExpiredLease(ctx, ns, l)) stats.freed.leases++;
        } catch (e) {
          this.opts.log?.warn({ err: e, namespace: ns, lease: l.id }, "removing an expired lease failed");
        }
      }
      try {
        await this.sweepNamespace(ctx, ns, universes[i]!, lv, roots[i]!, stats);
      } catch (e) {
        stats.skipped.push(`${ns}: ${causeText(e)}`);
        this.opts.log?.warn({ err: e, namespace: ns }, "garbage collection of a namespace failed");
      }
    }
    lap("sweep");
    stats.elapsedMs = Number(process.hrtime.bigint() - t0) / 1e6;
    return stats;
  }

  private now(): Date {
    return this.opts.now?.() ?? new Date();
  }

  private async readUniverse(ctx: CallContext, snapshotters: Result<string[]>): Promise<Universe> {
    const { sources } = this.opts;
    const [content, ingests, snapshots] = await Promise.all([
      attempt("content", () => sources.content.list(ctx)),
      attempt("content ingests", () => sources.content.ingests(ctx)),
      snapshotters.ok
        ? attempt("snapshots", async () => (await Promise.all(snapshotters.value.map((s) => sources.snapshots.list(ctx, s)))).flat())
        : Promise.resolve<Result<GraphSnapshot[]>>({ ok: false, why: snapshotters.why }),
    ]);
    return { content, ingests, snapshots };
  }

  private async readLeases(ctx: CallContext, ns: string, now: Date): Promise<LeaseView> {
    const leases = this.opts.stores.leases(ns);
    const expired = leases.filter((l) => leaseExpired(l.labels, now));
    const live = leases.filter((l) => !leaseExpired(l.labels, now));
    const held = await attempt("lease resources", () => mapLimit(live, 8, async (lease) => ({ lease, resources: await this.opts.stores.heldBy(ctx, lease.id) })));
    return { expired, held };
  }

  private async sweepNamespace(ctx: CallContext, ns: string, u: Universe, lv: LeaseView, r: Roots, stats: GCStats): Promise<void> {
    const why = [u.content, u.ingests, u.snapshots, lv.held, r.containers, r.sandboxes].filter((x): x is { ok: false; why: string } => !x.ok).map((x) => x.why);
    if (why.length) {
      stats.skipped.push(`${ns}: ${[...new Set(why)].join("; ")}`);
      return;
    }
    const content = (u.content as { value: ContentObject[] }).value;
    const ingests = (u.ingests as { value: IngestObject[] }).value;
    const snapshots = (u.snapshots as { value: GraphSnapshot[] }).value;
    const g = emptyGraph();
    for (const c of content) g.content.set(c.digest, c.labels);
    for (const s of snapshots) g.snapshots.set(snapshotNode(s.snapshotter, s.key), s);
    for (const img of r.images) {
      g.roots.content.push(img.target.digest);
      g.roots.labels.push(img.labels);
    }
    for (const c of (r.containers as { value: ContainerObject[] }).value) {
      if (c.snapshotter && c.snapshotKey) g.roots.snapshots.push({ snapshotter: c.snapshotter, key: c.snapshotKey });
      g.roots.labels.push(c.labels);
    }
    for (const labels of (r.sandboxes as { value: Record<string, string>[] }).value) g.roots.labels.push(labels);
    const leasedIngests = new Set<string>();
    const addHeld = (graph: NamespaceGraph, held: { lease: Lease; resources: LeaseResource[] }[]): void => {
      for (const { lease, resources } of held) {
        const flat = isFlatLease(lease.labels);
        graph.roots.labels.push(lease.labels);
        for (const res of resources) {
          if (res.type === "content") (flat ? graph.roots.flatContent : graph.roots.content).push(res.id);
          else if (res.type === "ingests") leasedIngests.add(res.id);
          else if (res.type.startsWith("snapshots/")) {
            (flat ? graph.roots.flatSnapshots : graph.roots.snapshots).push({ snapshotter: res.type.slice("snapshots/".length), key: res.id });
          }
        }
      }
    };
    addHeld(g, (lv.held as { value: { lease: Lease; resources: LeaseResource[] }[] }).value);
    const now = this.now().getTime();
    const idle = this.opts.ingestIdleMs ?? DAY;
    const keepIngest = (i: IngestObject): boolean => leasedIngests.has(i.ref) || now - i.updatedAt.getTime() < idle;
    for (const i of ingests) if (i.expected && keepIngest(i)) g.roots.content.push(i.expected);

    let marked = markReachable(g);
    let deadContent = content.filter((c) => !marked.has(contentNode(c.digest)));
    let deadSnaps = snapshots.filter((s) => !marked.has(snapshotNode(s.snapshotter, s.key)));
    let deadIngests = ingests.filter((i) => !keepIngest(i));
    if (!deadContent.length && !deadSnaps.length && !deadIngests.length) return;

    // Read the leases again right before deleting: a write may have added an existing object to a
    // lease (new or old) since step 2.
    const again = await attempt("lease resources", () =>
      mapLimit(this.opts.stores.leases(ns).filter((l) => !leaseExpired(l.labels, this.now())), 8, async (lease) => ({ lease, resources: await this.opts.stores.heldBy(ctx, lease.id) })));
    if (!again.ok) {
      stats.skipped.push(`${ns}: ${again.why}`);
      return;
    }
    addHeld(g, again.value);
    marked = markReachable(g);
    deadContent = deadContent.filter((c) => !marked.has(contentNode(c.digest)));
    deadSnaps = deadSnaps.filter((s) => !marked.has(snapshotNode(s.snapshotter, s.key)));
    deadIngests = deadIngests.filter((i) => !keepIngest(i));

    const { sources } = this.opts;
    const pass = stats.pass;
    const tolerate = (e: unknown, what: string): void => {
      if (isNotFound(e) || isFailedPrecondition(e)) return; // gone already / leased or in use: kept
      this.opts.log?.warn({ err: e, namespace: ns }, `garbage collection could not remove ${what}`);
    };
    // Content and snapshots are independent: their deletes run side by side.
    const sweepContent = async (): Promise<void> => {
      await mapLimit(deadIngests, 8, async (i) => {
        try {
          await sources.content.abort(ctx, i.ref, pass);
          stats.freed.ingests++;
        } catch (e) {
          tolerate(e, `ingest ${i.ref}`);
        }
      });
      await mapLimit(deadContent, 8, async (c) => {
        try {
          this.noteSwept(ns, "content", c.digest);
          await sources.content.delete(ctx, c.digest, pass);
          stats.freed.content++;
          this.opts.log?.debug({ pass, namespace: ns, digest: c.digest }, "gc removed content");
        } catch (e) {
          tolerate(e, `content ${c.digest}`);
        }
      });
    };
    await Promise.all([sweepContent(), this.removeSnapshots(ctx, ns, deadSnaps, snapshots, stats, tolerate)]);
  }

  /**
   * Children before parents, without a round trip per level: every dead snapshot is asked for at once,
   * children first (the snapshots process takes calls in the order they arrive and runs its
   * transactions in that order, so a chain usually goes in one commit). The owner refuses to remove a
   * snapshot that still has a child (FailedPrecondition), so the order can never break the tree; what
   * it refused is asked again while rounds make progress. A child that stays (leased, in use) keeps
   * its parents, whatever the round.
   */
  private async removeSnapshots(ctx: CallContext, ns: string, dead: GraphSnapshot[], all: GraphSnapshot[], stats: GCStats, tolerate: (e: unknown, what: string) => void): Promise<void> {
    const byNode = new Map(all.map((s) => [snapshotNode(s.snapshotter, s.key), s]));
    const depth = new Map<string, number>();
    const depthOf = (s: GraphSnapshot): number => {
      const node = snapshotNode(s.snapshotter, s.key);
      let d = depth.get(node);
      if (d !== undefined) return d;
      depth.set(node, 0); // a cycle (never in a real tree) ends here
      const parent = s.parent ? byNode.get(snapshotNode(s.snapshotter, s.parent)) : undefined;
      d = parent ? depthOf(parent) + 1 : 0;
      depth.set(node, d);
      return d;
    };
    let left = dead.slice().sort((a, b) => depthOf(b) - depthOf(a));
    while (left.length) {
      const refused: GraphSnapshot[] = [];
      await mapLimit(left, 64, async (s) => {
        try {
          this.noteSwept(ns, "snapshot", `${s.snapshotter}/${s.key}`);
          await this.opts.sources.snapshots.remove(ctx, s.snapshotter, s.key, stats.pass);
          stats.freed.snapshots++;
          this.opts.log?.debug({ pass: stats.pass, namespace: ns, snapshotter: s.snapshotter, key: s.key }, "gc removed snapshot");
        } catch (e) {
          if (isFailedPrecondition(e)) refused.push(s);
          else tolerate(e, `snapshot ${s.snapshotter}/${s.key}`);
        }
      });
      if (refused.length === left.length) return; // no progress: what is left is kept
      left = left.filter((s) => refused.includes(s));
    }
  }
}
