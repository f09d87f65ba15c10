/**
 * When garbage collection runs: containerd's gc scheduler (gc/scheduler) in TypeScript, plus the
 * namespaces each pass needs to look at.
 *
 * - A deletion (`markDirty`) schedules a pass: at once when none is scheduled, else at the next tick;
 *   ticks are spaced so collection takes at most `pauseThreshold` of real time (debounce).
 * - `mutationThreshold` mutations make the next tick collect even without deletions.
 * - `scheduleAndWait` (a `sync` delete) runs a pass after `scheduleDelay` and resolves with the stats of
 *   the first pass that *starts* after the call.
 * - A pass after `startupDelay` (counted once the other processes answer, see `start`), over every
 *   namespace; the earliest lease expiry (`nextExpiry`, looked at again after every pass) wakes the
 *   collector at that time.
 * The scheduler is made before the stores that notify it, and given the collector (which reads those
 * stores) when started: nothing runs before `start`.
 * Only the namespaces touched since the previous pass are collected (all of them at startup, after an
 * untargeted mark, and every `fullScanInterval`).
 */
import type { CallContext } from "#libs/context";
import { schema, type Infer } from "#libs/config";
import { GC_PHASES, type GCPhase, type GCReadPhase, type GCScheduler, type GCStats } from "#libs/core/gc";

export interface SchedulerConfig {
  pauseThreshold: number;
  deletionThreshold: number;
  mutationThreshold: number;
  scheduleDelayMs: number;
  startupDelayMs: number;
  /** Collect every namespace at least this often (ms, 0 = only at startup and when asked). */
  fullScanIntervalMs: number;
  /** Deadline of each call the collector makes to another process (a hung process counts as down). */
  rpcTimeoutMs: number;
}

export const DEFAULT_SCHEDULER_CONFIG: SchedulerConfig = {
  pauseThreshold: 0.02,
  deletionThreshold: 0,
  mutationThreshold: 100,
  scheduleDelayMs: 0,
  startupDelayMs: 100,
  fullScanIntervalMs: 10 * 60 * 1000,
  rpcTimeoutMs: 30000,
};

/**
 * containerd's `[plugins."io.containerd.gc.v1.scheduler"]` table (durations as Go writes them: "100ms",
 * "1s"), plus Flotilla's full_scan_interval and rpc_timeout.
 */
export const SCHEDULER_CONFIG_SCHEMA = schema.table({
  pause_threshold: schema.number(),
  deletion_threshold: schema.int(),
  mutation_threshold: schema.int(),
  schedule_delay: schema.duration(),
  startup_delay: schema.duration(),
  full_scan_interval: schema.duration(),
  rpc_timeout: schema.duration(),
});

/** The scheduler's settings from its checked table, defaults for what it leaves out. */
export function schedulerConfig(t: Infer<typeof SCHEDULER_CONFIG_SCHEMA>): SchedulerConfig {
  const c = DEFAULT_SCHEDULER_CONFIG;
  return {
    pauseThreshold: Math.min(0.5, Math.max(0, t.pause_threshold ?? c.pauseThreshold)),
    deletionThreshold: t.deletion_threshold ?? c.deletionThreshold,
    mutationThreshold: Math.max(0, t.mutation_threshold ?? c.mutationThreshold),
    scheduleDelayMs: Math.max(0, t.schedule_delay ?? c.scheduleDelayMs),
    startupDelayMs: Math.max(0, t.startup_delay ?? c.startupDelayMs),
    fullScanIntervalMs: Math.max(0, t.full_scan_interval ?? c.fullScanIntervalMs),
    rpcTimeoutMs: Math.max(1, t.rpc_timeout ?? c.rpcTimeoutMs),
  };
}

export interface Collecting {
  collect(ctx: CallContext | undefined, only?: ReadonlySet<string>): Promise<GCStats>;
  /** The running pass: the namespaces it covers and its phase. */
  progress?(): { only?: ReadonlySet<string>; phase: GCPhase } | undefined;
}

/** Hooks of the scheduler's owner: what to do with each pass's outcome (metrics, logs). */
export interface SchedulerHooks {
  onPass?(s: GCStats): void;
  onError?(e: unknown): void;
}

export interface SchedulerStart {
  collector: Collecting;
  /** The startup pass comes `startupDelay` after this settles (the sources being ready). */
  after?: Promise<unknown>;
  /** The earliest lease expiry across namespaces, if any (the collector is woken then). */
  nextExpiry?(): { ns: string; at: Date } | undefined;
}

interface Waiter {
  resolve(s: GCStats): void;
  reject(e: unknown): void;
}

const ALL = "*all*";
const MAX_TIMER = 2 ** 31 - 1;

export class Scheduler implements GCScheduler {
  private timer?: NodeJS.Timeout;
  private nextCollection?: number;
  private lastCollection?: number;
  private lastFullScan = 0;
  private interval = 1000;
  private gcTime = 0;
  private collections = 0;
  private triggered = false;
  private deletions = 0;
  private mutations = 0;
  private running = false;
  private stopped = false;
  private waiters: Waiter[] = [];
  /** Waiters of the running pass (a sync call may still join it, see scheduleAndWait). */
  private runningWaiters?: Waiter[];
  private pending = new Set<string>([ALL]);
  private expiryTimer?: NodeJS.Timeout;
  private retryTimer?: NodeJS.Timeout;
  private retryDelay = 0;
  private readonly retryNs = new Set<string>();
  private expiryAt?: number;
  private expiryNs = new Set<string>();

  private collector?: Collecting;
  private nextExpiry?: SchedulerStart["nextExpiry"];

  constructor(
    private readonly cfg: SchedulerConfig = DEFAULT_SCHEDULER_CONFIG,
    private readonly hooks: SchedulerHooks = {},
  ) {}

  /**
   * Start collecting with `collector`: marks made before now are looked at, the next lease expiry is
   * armed, and the startup pass comes `startupDelay` after `after` settles.
   */
  start({ collector, after, nextExpiry }: SchedulerStart): void {
    this.collector = collector;
    this.nextExpiry = nextExpiry;
    this.wakeAtNextExpiry();
    this.onEvent();
    if (this.cfg.startupDelayMs <= 0) return;
    if (!after) return this.schedule(this.cfg.startupDelayMs);
    void after.finally(() => {
      if (this.nextCollection === undefined && !this.running) this.schedule(this.cfg.startupDelayMs);
    });
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    clearTimeout(this.expiryTimer);
    clearTimeout(this.retryTimer);
    for (const w of this.waiters.splice(0)) w.reject(new Error("garbage collector stopped"));
  }

  private touch(ns?: string): void {
    this.pending.add(ns ?? ALL);
  }

  markDirty(ns?: string): void {
    this.touch(ns);
    this.deletions++;
    this.onEvent();
  }

  markMutation(ns?: string): void {
    this.touch(ns);
    this.mutations++;
    this.onEvent();
  }

  scheduleAndWait(ctx?: CallContext, after: GCReadPhase = "images", ns?: string): Promise<GCStats> {
    const n = ns ?? ctx?.namespace;
    let p: Promise<GCStats>;
    const run = this.collector?.progress?.();
    const readsIn: GCPhase = after === "leases" ? "leases" : "read";
    if (this.running && this.runningWaiters && run && (!run.only || (n !== undefined && run.only.has(n))) && GC_PHASES.indexOf(run.phase) < GC_PHASES.indexOf(readsIn)) {
      // The running pass covers the namespace and has not read what was just deleted: it serves.
      const into = this.runningWaiters;
      p = new Promise<GCStats>((resolve, reject) => into.push({ resolve, reject }));
    } else {
      this.touch(n);
      p = new Promise<GCStats>((resolve, reject) => this.waiters.push({ resolve, reject }));
      this.triggered = true;
      this.onEvent();
    }
    if (ctx?.signal) {
      return new Promise<GCStats>((resolve, reject) => {
        const onAbort = (): void => reject(ctx.signal.reason ?? new Error("canceled"));
        ctx.signal.addEventListener("abort", onAbort, { once: true });
        p.then(resolve, reject).finally(() => ctx.signal.removeEventListener("abort", onAbort));
      });
    }
    return p;
  }

  /** Wake the collector for `ns` at `at` (a lease expires then). */
  expiresAt(ns: string, at: Date): void {
    const t = at.getTime() + 1;
    if (this.expiryAt !== undefined && this.expiryAt <= t) {
      if (this.expiryAt === t) this.expiryNs.add(ns);
      return;
    }
    clearTimeout(this.expiryTimer);
    this.expiryAt = t;
    this.expiryNs = new Set([ns]);
    this.expiryTimer = setTimeout(() => {
      const nss = this.expiryNs;
      this.expiryAt = undefined;
      this.expiryNs = new Set();
      if (Date.now() < t) return this.expiresAt([...nss][0]!, at); // long delays are clamped
      for (const n of nss) this.markDirty(n);
    }, Math.min(MAX_TIMER, Math.max(0, t - Date.now())));
    this.expiryTimer.unref();
  }

  /** Forget the pending expiry wake-up (the next pass recomputes it). */
  clearExpiry(): void {
    clearTimeout(this.expiryTimer);
    this.expiryAt = undefined;
    this.expiryNs = new Set();
  }

  /** A pass that had to skip data (a process was down) is retried with backoff (1 s doubling to 1 min). */
  private retryLater(nss: ReadonlySet<string>): void {
    this.retryDelay = Math.min(60000, this.retryDelay ? this.retryDelay * 2 : 1000);
    clearTimeout(this.retryTimer);
    for (const n of nss) this.retryNs.add(n);
    this.retryTimer = setTimeout(() => {
      for (const n of this.retryNs) this.pending.add(n);
      this.retryNs.clear();
      this.triggered = true;
      this.onEvent();
    }, this.retryDelay);
    this.retryTimer.unref();
  }

  private wakeAtNextExpiry(): void {
    const next = this.nextExpiry?.();
    if (next) this.expiresAt(next.ns, next.at);
  }

  private schedule(delay: number): void {
    if (this.stopped || !this.collector) return;
    clearTimeout(this.timer);
    this.nextCollection = Date.now() + delay;
    this.timer = setTimeout(() => void this.tick(), delay);
    if (!this.waiters.length) this.timer.unref(); // a sync caller waits on it: keep the process up

  }

  private onEvent(): void {
    if (this.running) return; // looked at again when the pass ends
    const c = this.cfg;
    if (
      this.triggered ||
      (c.deletionThreshold > 0 && this.deletions >= c.deletionThreshold) ||
      (this.nextCollection === undefined && ((c.deletionThreshold === 0 && this.deletions > 0) || (c.mutationThreshold > 0 && this.mutations >= c.mutationThreshold)))
    ) {
      if (this.nextCollection === undefined || this.nextCollection > Date.now() + c.scheduleDelayMs) this.schedule(c.scheduleDelayMs);
    }
  }

  private async tick(): Promise<void> {
    this.nextCollection = undefined;
    const collector = this.collector;
    if (!collector) return;
    const c = this.cfg;
    const full = c.fullScanIntervalMs > 0 && Date.now() - this.lastFullScan >= c.fullScanIntervalMs;
    if (!this.triggered && this.lastCollection !== undefined && this.deletions === 0 && !full && (c.mutationThreshold === 0 || this.mutations < c.mutationThreshold)) {
      this.schedule(this.interval);
      return;
    }
    this.running = true;
    const waiters = this.waiters.splice(0);
    this.runningWaiters = waiters;
    const pending = this.pending;
    this.pending = new Set();
    // This pass also serves any retry still waiting (its timer must not start a pass of its own later).
    for (const n of this.retryNs) pending.add(n);
    this.retryNs.clear();
    clearTimeout(this.retryTimer);
    const all = pending.has(ALL) || full;
    this.triggered = false;
    this.deletions = 0;
    this.mutations = 0;
    try {
      const stats = await collector.collect(undefined, all ? undefined : pending);
      if (all) this.lastFullScan = Date.now();
      // A pass that waited on an unreachable process says nothing about how long collection takes.
      if (!stats.skipped.length) {
        this.gcTime += stats.elapsedMs;
        this.collections++;
      }
      if (c.pauseThreshold > 0 && this.collections > 0) {
        const avg = this.gcTime / this.collections;
        this.interval = Math.max(1, avg / c.pauseThreshold - avg);
      }
      this.hooks.onPass?.(stats);
      for (const w of waiters) w.resolve(stats);
      if (stats.skipped.length) this.retryLater(all ? new Set([ALL]) : pending);
      else this.retryDelay = 0;
    } catch (e) {
      for (const n of pending) this.pending.add(n);
      this.interval += 1000;
      this.hooks.onError?.(e);
      for (const w of waiters) w.reject(e);
    } finally {
      this.lastCollection = Date.now();
      this.running = false;
      this.runningWaiters = undefined;
    }
    try {
      this.wakeAtNextExpiry();
    } catch {
      /* best effort */
    }
    this.schedule(this.interval);
    this.onEvent();
  }
}
