/**
 * The local LeaseManager: leases (id, labels, creation time) in the images process's LMDB database;
 * what they hold is recorded by the processes that own the resources (content: `content`, `ingests`;
 * snapshots: `snapshots/<snapshotter>`), reached as LeaseResourceHolders. Deleting a lease forgets its
 * records there too (retried by the collector while a holder is unreachable).
 */
import { keyFits, MAX_NAME_KEY_BYTES, writeTxn } from "#libs/lmdb";
import * as crypto from "node:crypto";
import { namespaceRequired, type CallContext } from "#libs/context";
import { errAlreadyExists, errInvalidArgument, errNotFound, errNotImplemented, isNotImplemented } from "#libs/errdefs";
import { compactLabels, validateLabels } from "#libs/fieldmask";
import { parseAll } from "#libs/filters";
import type { Logger } from "pino";
import { leaseExpiry, type GCScheduler } from "#libs/core/gc";
import {
  checkLeaseResource,
  leaseResourceHolderKind,
  randomLeaseId,
  type Lease,
  type LeaseCreateOptions,
  type LeaseDeleteOptions,
  type LeaseManager,
  type LeaseResource,
  type LeaseResourceHolder,
} from "#libs/core/leases";
import { leaseAdaptor } from "./adaptors";
import { scanPrefix, type MetaDB } from "./db";
import { ensureNamespaceInTxn } from "./namespaces";
import type { MarkGate } from "./gc/gate";
import { KeyedMutex } from "#libs/sync";
import { dateFromStored, nanosOf, storedNanos, storedTime } from "#libs/time";

interface StoredLease {
  labels: Record<string, string>;
  /** bigint nanoseconds (milliseconds, a number, in older records): libs/time */
  created: bigint | number;
}

export interface LeaseHolders {
  content?: LeaseResourceHolder;
  snapshots?: LeaseResourceHolder;
}

const leaseKey = (ns: string, id: string): string[] => ["lease", ns, id];
const forgetKey = (ns: string, id: string): string[] => ["lease-forget", ns, id];

const toLease = (id: string, s: StoredLease): Lease => ({ id, labels: { ...s.labels }, createdAt: dateFromStored(s.created) });

/** containerd lists a lease's resources content first, then ingests, then snapshots. */
const TYPE_RANK = (t: string): number => (t === "content" ? 0 : t === "ingests" ? 1 : 2);

export interface LocalLeaseManagerOptions {
  db: MetaDB;
  holders: LeaseHolders;
  gc?: Pick<GCScheduler, "markDirty" | "markMutation" | "scheduleAndWait">;
  gate?: MarkGate;
  log?: Logger;
  /** Deadline of the calls that tell holders to forget a deleted lease (default 5 s). */
  holderTimeoutMs?: number;
  /** Told when a lease with `containerd.io/gc.expire` is created (to wake the collector then). */
  onExpiry?: (ns: string, at: Date) => void;
}

export class LocalLeaseManager implements LeaseManager {
  private readonly db: MetaDB;
  private readonly idLocks = new KeyedMutex();

  constructor(private readonly opts: LocalLeaseManagerOptions) {
    this.db = opts.db;
  }

  private exists(ns: string, id: string): boolean {
    return !!id && keyFits(["lease", ns, id]) && this.db.get(leaseKey(ns, id)) !== undefined;
  }

  async create(ctx: CallContext, opts: LeaseCreateOptions): Promise<Lease> {
    const ns = namespaceRequired(ctx);
    const labels = compactLabels(opts.labels);
    const bad = validateLabels(labels);
    if (bad) throw errInvalidArgument(`lease labels: ${bad}`);
    const given = opts.id ?? "";
    // The id is part of the lease records' keys in every process holding resources (next to a resource's).
    if (Buffer.byteLength(given) > MAX_NAME_KEY_BYTES) throw errInvalidArgument(`lease id ${JSON.stringify(given.slice(0, 64) + "...")} is too long (more than ${MAX_NAME_KEY_BYTES} bytes)`);
    for (let attempt = 0; ; attempt++) {
      const id = given || randomLeaseId(Number(process.hrtime.bigint() % 1_000_000_000n), crypto.randomBytes(3));
      const created = await this.idLocks.run(`${ns}\0${id}`, async () => {
        if (this.exists(ns, id)) return undefined;
        // A lease id can be reused: records an earlier lease of that id left behind go first. If a
        // holder is unreachable they stay, protecting more than needed until this lease goes.
        if (this.db.get(forgetKey(ns, id)) !== undefined) await this.forgetHolders(ctx, ns, id).catch(() => undefined);
        const stored: StoredLease = { labels, created: storedTime() };
        const ok = await writeTxn(this.db, () => {
          if (this.db.get(leaseKey(ns, id)) !== undefined) return false;
          ensureNamespaceInTxn(this.db, ns);
          void this.db.put(leaseKey(ns, id), stored);
          void this.db.remove(forgetKey(ns, id));
          return true;
        });
        return ok ? toLease(id, stored) : undefined;
      });
      if (created) {
        this.opts.gc?.markMutation(ns);
        const exp = leaseExpiry(created.labels);
        if (exp instanceof Date) this.opts.onExpiry?.(ns, exp);
        return created;
      }
      if (given || attempt > 8) throw errAlreadyExists(`lease ${JSON.stringify(id)}`);
    }
  }

  async delete(ctx: CallContext, id: string, opts: LeaseDeleteOptions = {}): Promise<void> {
    const ns = namespaceRequired(ctx);
    const run = async (): Promise<boolean> =>
      writeTxn(this.db, () => {
        if (!this.exists(ns, id)) return false;
        void this.db.remove(leaseKey(ns, id));
        void this.db.put(forgetKey(ns, id), Date.now());
        return true;
      });
    const removed = this.opts.gate ? await this.opts.gate.shared(run) : await run();
    if (!removed) throw errNotFound(`lease ${JSON.stringify(id)}`);
    this.opts.gc?.markDirty(ns);
    // Forgetting the records is not needed for correctness (only live leases protect), so not awaited
    // unless the caller waits for a collection anyway; then it starts once this call has answered (its
    // calls to the other processes would otherwise go out ahead of the answer).
    if (opts.sync && this.opts.gc) {
      await this.forget(ctx, ns, id).catch(() => undefined);
      await this.opts.gc.scheduleAndWait(ctx, "leases");
    } else {
      setImmediate(() => void this.forget(ctx, ns, id).catch(() => undefined));
    }
  }

  async list(ctx: CallContext, filters?: readonly string[]): Promise<Lease[]> {
    const ns = namespaceRequired(ctx);
    const f = parseAll(filters);
    const out: Lease[] = [];
    for (const { key, value } of scanPrefix<StoredLease>(this.db, ["lease", ns])) {
      const l = toLease(String(key[2]), value);
      if (f.match(leaseAdaptor(l))) out.push(l);
    }
    return out;
  }

  private holderFor(r: LeaseResource): LeaseResourceHolder {
    const problem = checkLeaseResource(r);
    if (problem) throw problem.code === "invalid" ? errInvalidArgument(problem.message) : errNotImplemented(problem.message);
    const kind = leaseResourceHolderKind(r.type);
    const h = kind ? this.opts.holders[kind] : undefined;
    if (!h) throw errNotImplemented(`resource type ${r.type} not supported yet`);
    return h;
  }

  async addResource(ctx: CallContext, id: string, resource: LeaseResource): Promise<void> {
    const ns = namespaceRequired(ctx);
    if (!this.exists(ns, id)) throw errNotFound(`lease ${JSON.stringify(id)}`);
    await this.holderFor(resource).addResource(ctx, id, resource);
    this.opts.gc?.markMutation(ns);
  }

  async deleteResource(ctx: CallContext, id: string, resource: LeaseResource): Promise<void> {
    const ns = namespaceRequired(ctx);
    if (!this.exists(ns, id)) throw errNotFound(`lease ${JSON.stringify(id)}`);
    await this.holderFor(resource).deleteResource(ctx, id, resource);
    this.opts.gc?.markDirty(ns);
  }

  async listResources(ctx: CallContext, id: string): Promise<LeaseResource[]> {
    const ns = namespaceRequired(ctx);
    if (!this.exists(ns, id)) throw errNotFound(`lease ${JSON.stringify(id)}`);
    return this.heldBy(ctx, id);
  }

  /** What `id` holds in every holder (no lease check). A holder that does not implement leases holds nothing. */
  async heldBy(ctx: CallContext, id: string): Promise<LeaseResource[]> {
    const lists = await Promise.all(
      [this.opts.holders.content, this.opts.holders.snapshots].map(async (h) => {
        if (!h) return [];
        try {
          return await h.listResources(ctx, id);
        } catch (e) {
          if (isNotImplemented(e)) return [];
          throw e;
        }
      }),
    );
    return lists.flat().sort((a, b) => TYPE_RANK(a.type) - TYPE_RANK(b.type) || (a.type < b.type ? -1 : a.type > b.type ? 1 : 0));
  }

  // ---- for the collector and namespace deletion ----

  /** Every lease of a namespace. */
  namespaceLeases(ns: string): Lease[] {
    const out: Lease[] = [];
    for (const { key, value } of scanPrefix<StoredLease>(this.db, ["lease", ns])) out.push(toLease(String(key[2]), value));
    return out;
  }

  /** The earliest future `containerd.io/gc.expire` over every lease, if any. */
  earliestExpiry(now = new Date()): { ns: string; at: Date } | undefined {
    let best: { ns: string; at: Date } | undefined;
    for (const { key, value } of this.db.getRange({ start: ["lease"], end: ["lease\0"] })) {
      const k = key as (string | number)[];
      if (k.length !== 3) continue;
      const exp = leaseExpiry((value as StoredLease).labels);
      if (exp instanceof Date && exp.getTime() >= now.getTime() && (!best || exp < best.at)) best = { ns: String(k[1]), at: exp };
    }
    return best;
  }

  hasLeases(ns: string): boolean {
    for (const _ of scanPrefix(this.db, ["lease", ns])) return true;
    return false;
  }

  /** Remove an expired lease if it is still the one the collector saw (same creation time). */
  async removeExpired(ctx: CallContext, ns: string, lease: Lease): Promise<boolean> {
    const removed = await writeTxn(this.db, () => {
      const cur = this.db.get(leaseKey(ns, lease.id)) as StoredLease | undefined;
      if (!cur || storedNanos(cur.created) !== nanosOf(lease.createdAt)) return false;
      void this.db.remove(leaseKey(ns, lease.id));
      void this.db.put(forgetKey(ns, lease.id), Date.now());
      return true;
    });
    if (removed) await this.forget(ctx, ns, lease.id).catch(() => undefined);
    return removed;
  }

  private async forgetHolders(ctx: CallContext, ns: string, id: string): Promise<void> {
    const limit = Date.now() + (this.opts.holderTimeoutMs ?? 5000);
    const c = { ...ctx, namespace: ns, lease: undefined, deadline: new Date(Math.min(limit, ctx.deadline?.getTime() ?? limit)) };
    await Promise.all(
      [this.opts.holders.content, this.opts.holders.snapshots].map(async (h) => {
        if (!h) return;
        try {
          await h.deleteLease(c, id);
        } catch (e) {
          if (!isNotImplemented(e)) throw e;
        }
      }),
    );
  }

  /**
   * Tell every holder to forget a deleted lease's records, then drop the pending mark. Serialized with
   * create of the same id, and skipped once the id lives again (its create forgot the old records).
   */
  async forget(ctx: CallContext, ns: string, id: string): Promise<void> {
    await this.idLocks.run(`${ns}\0${id}`, async () => {
      if (this.exists(ns, id) || this.db.get(forgetKey(ns, id)) === undefined) return;
      await this.forgetHolders(ctx, ns, id);
      await writeTxn(this.db, () => {
        if (!this.exists(ns, id)) void this.db.remove(forgetKey(ns, id));
      });
    });
  }

  /** Retry forgetting deleted leases whose holders were unreachable; returns how many are still pending. */
  async retryForgets(ctx: CallContext): Promise<number> {
    const pending: { ns: string; id: string }[] = [];
    for (const { key } of this.db.getRange({ start: ["lease-forget"], end: ["lease-forget\0"] })) {
      const k = key as (string | number)[];
      if (k.length === 3) pending.push({ ns: String(k[1]), id: String(k[2]) });
    }
    let left = 0;
    for (const p of pending) {
      if (left) {
        left++; // a holder did not answer: try the rest next time rather than wait on each
        continue;
      }
      try {
        await this.forget(ctx, p.ns, p.id);
      } catch (e) {
        left++;
        this.opts.log?.debug({ err: (e as Error).message, lease: p.id, namespace: p.ns }, "lease records not forgotten yet");
      }
    }
    return left;
  }
}
