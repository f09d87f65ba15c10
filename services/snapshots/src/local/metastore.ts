/**
 * The local Snapshotter: containerd's metadata semantics (namespaced keys, kinds, parents, labels,
 * leases, events) over one LMDB database, with the directories handled by a SnapshotBackend.
 *
 * Every state change is one LMDB transaction; the only filesystem step inside a transaction is the
 * rename that makes a staged directory the snapshot's (see backends.ts), so a crash leaves at worst
 * an unreferenced directory that `reconcile` removes at start-up.
 */
import { GC_SWEEP_HEADER } from "#libs/core/gc";
import * as fs from "node:fs";
import type { Logger } from "pino";
import { namespaceRequired, type CallContext } from "#libs/context";
import { errAlreadyExists, errFailedPrecondition, errInvalidArgument, errNotFound } from "#libs/errdefs";
import { applyMapMask, compactLabels, validateLabels } from "#libs/fieldmask";
import { mapField, NOT_PRESENT, parseAll, present, type Adaptor } from "#libs/filters";
import type { EventRecorder } from "#libs/events";
import {
  kindFromWire, kindToWire, SNAPSHOT_EVENTS, SnapshotKinds, snapshotLeaseResourceType,
  type Mount, type SnapshotInfo, type SnapshotKind, type SnapshotOptions, type Snapshotter, type SnapshotUsage, type WalkFn,
} from "#libs/core/snapshots";
import { discard, OverlayBackend, removeUnknown, snapshotsDir, usageOf, type SnapshotBackend } from "./backends";
import { infoOf } from "../../public";
import { childKey, idKey, layoutKey, MAX_KEY_PART, seqKey, snapKey, writeTxn, type Key, type SnapshotRecord, type SnapshotsDB } from "./db";
import { leaseRecordOps } from "./leases";
import { removeTree } from "./fsutil";
import { MAX_NAME_KEY_BYTES } from "#libs/lmdb";

/** A new snapshot's key or name must fit in the keys that hold it (with its parent's, in the children index). */
function checkKeyLength(what: string, key: string): void {
  if (Buffer.byteLength(key) > MAX_NAME_KEY_BYTES) throw errInvalidArgument(`${what} ${JSON.stringify(key.slice(0, 64) + "...")} is too long (more than ${MAX_NAME_KEY_BYTES} bytes)`);
}
import { laterThan, storedTime } from "#libs/time";

export interface LocalSnapshotterOptions {
  db: SnapshotsDB;
  backend: SnapshotBackend;
  events?: Pick<EventRecorder, "record">;
  /** Called before the first write in a namespace (creates it in the namespaces service). */
  ensureNamespace?: (ctx: CallContext, ns: string) => Promise<void>;
  log?: Logger;
}

type TxResult<T> = { ok: T } | { err: Error };

export function snapshotAdaptor(info: SnapshotInfo): Adaptor {
  return (fp) => {
    switch (fp[0]) {
      case "kind": return present(info.kind);
      case "name": return present(info.name);
      case "parent": return present(info.parent);
      case "labels": return mapField(info.labels, fp.slice(1));
      default: return NOT_PRESENT;
    }
  };
}

/** A snapshotter is no longer loaded (the process started without it): views stop answering for it. */
export async function forgetLayout(db: SnapshotsDB, sn: string): Promise<void> {
  await writeTxn(db, () => void db.remove(layoutKey(sn)));
}

export class LocalSnapshotter implements Snapshotter {
  readonly name: string;
  private readonly db: SnapshotsDB;
  private readonly backend: SnapshotBackend;
  private readonly pendingRemovals = new Set<Promise<void>>();

  constructor(private readonly opts: LocalSnapshotterOptions) {
    this.db = opts.db;
    this.backend = opts.backend;
    this.name = opts.backend.name;
  }

  private record(ns: string, key: string): SnapshotRecord | undefined {
    return this.db.get(snapKey(this.name, ns, key)) as SnapshotRecord | undefined;
  }

  private info(key: string, r: SnapshotRecord): SnapshotInfo {
    return infoOf(key, r);
  }

  /** Record this snapshotter's layout as loaded (read views build its mounts from it; see `readSnapshot`). */
  async publishLayout(): Promise<void> {
    await writeTxn(this.db, () => void this.db.put(layoutKey(this.name), this.backend.layout));
  }

  private validateLabels(labels: Record<string, string> | undefined): Record<string, string> {
    const bad = validateLabels(labels);
    if (bad) throw errInvalidArgument(`info.Labels: ${bad}`);
    return compactLabels(labels);
  }

  /** Record the event in the outbox, in the write transaction of the change it describes. */
  private recordEvent(ctx: CallContext, ev: { topic: string; type: string }, body: Record<string, unknown>): void {
    this.opts.events?.record(this.db, ctx, ev.topic, ev.type, { ...body, snapshotter: this.name });
  }

  async stat(ctx: CallContext, key: string): Promise<SnapshotInfo> {
    const ns = namespaceRequired(ctx);
    const r = this.record(ns, key);
    if (!r) throw errNotFound(`snapshot ${key} does not exist`);
    return this.info(key, r);
  }

  async update(ctx: CallContext, info: Pick<SnapshotInfo, "name" | "labels">, paths: readonly string[] = []): Promise<SnapshotInfo> {
    const ns = namespaceRequired(ctx);
    if (!info.name) throw errInvalidArgument("snapshot name must not be empty");
    for (const p of paths) {
      if (p !== "labels" && !p.startsWith("labels.")) throw errInvalidArgument(`cannot update ${JSON.stringify(p)} field on snapshot ${JSON.stringify(info.name)}`);
    }
    const res = await writeTxn(this.db, (): TxResult<SnapshotRecord> => {
      const r = this.record(ns, info.name);
      if (!r) return { err: errNotFound(`snapshot ${info.name} does not exist`) };
      const labels = paths.length ? applyMapMask("labels", r.labels, info.labels, paths) : compactLabels(info.labels);
      const bad = validateLabels(labels);
      if (bad) return { err: errInvalidArgument(`info.Labels: ${bad}`) };
      const next: SnapshotRecord = { ...r, labels, updated: laterThan(r.updated) };
      void this.db.put(snapKey(this.name, ns, info.name), next);
      return { ok: next };
    });
    if ("err" in res) throw res.err;
    return this.info(info.name, res.ok);
  }

  async usage(ctx: CallContext, key: string): Promise<SnapshotUsage> {
    const ns = namespaceRequired(ctx);
    const r = this.record(ns, key);
    if (!r) throw errNotFound(`snapshot ${key} does not exist`);
    const kind = kindFromWire(r.kind);
    if (!this.backend.measured(kind)) return { size: 0, inodes: 0 };
    if (kind !== SnapshotKinds.Committed) return usageOf(this.backend, r.id);
    if (r.usage) return r.usage;
    const u = usageOf(this.backend, r.id);
    // Committed snapshots are immutable: cache the figure (if the record is still the same snapshot).
    await writeTxn(this.db, () => {
      const cur = this.record(ns, key);
      if (cur && cur.id === r.id) void this.db.put(snapKey(this.name, ns, key), { ...cur, usage: u });
    });
    return u;
  }

  async mounts(ctx: CallContext, key: string): Promise<Mount[]> {
    const ns = namespaceRequired(ctx);
    const r = this.record(ns, key);
    if (!r) throw errNotFound(`snapshot ${key} does not exist`);
    const kind = kindFromWire(r.kind);
    if (kind === SnapshotKinds.Committed) throw errFailedPrecondition(`requested snapshot ${key} not active or view`);
    return this.backend.mounts(r.id, kind, r.chain);
  }

  prepare(ctx: CallContext, key: string, parent: string, opts?: SnapshotOptions): Promise<Mount[]> {
    return this.create(ctx, SnapshotKinds.Active, key, parent, opts);
  }

  view(ctx: CallContext, key: string, parent: string, opts?: SnapshotOptions): Promise<Mount[]> {
    return this.create(ctx, SnapshotKinds.View, key, parent, opts);
  }

  /** The parent's chain, or an error, as of now. */
  private parentChain(ns: string, key: string, parent: string): TxResult<number[]> {
    if (this.record(ns, key)) return { err: errAlreadyExists(`snapshot ${JSON.stringify(key)}`) };
    if (!parent) return { ok: [] };
    const p = this.record(ns, parent);
    if (!p) return { err: errNotFound(`parent snapshot ${parent} does not exist`) };
    if (p.kind !== 3) return { err: errInvalidArgument(`parent ${JSON.stringify(parent)} is not committed snapshot`) };
    return { ok: [p.id, ...p.chain] };
  }

  private async create(ctx: CallContext, kind: SnapshotKind, key: string, parent: string, opts?: SnapshotOptions): Promise<Mount[]> {
    const ns = namespaceRequired(ctx);
    if (!key) throw errInvalidArgument("snapshot key must not be empty");
    checkKeyLength("snapshot key", key);
    const labels = this.validateLabels(opts?.labels);
    const pre = this.parentChain(ns, key, parent);
    if ("err" in pre) throw pre.err;
    await this.opts.ensureNamespace?.(ctx, ns);
    const td = await this.backend.stage(kind, pre.ok);
    let res: TxResult<SnapshotRecord>;
    try {
      res = await writeTxn(this.db, (): TxResult<SnapshotRecord> => {
        const chk = this.parentChain(ns, key, parent);
        if ("err" in chk) return chk;
        if (chk.ok[0] !== pre.ok[0]) return { err: errFailedPrecondition(`parent snapshot ${parent} changed while preparing ${key}`) };
        const id = ((this.db.get(seqKey(this.name)) as number | undefined) ?? 0) + 1;
        const now = storedTime();
        const rec: SnapshotRecord = { id, kind: kindToWire(kind) as 1 | 2, parent, chain: chk.ok, labels, created: now, updated: now };
        void this.db.put(seqKey(this.name), id);
        void this.db.put(snapKey(this.name, ns, key), rec);
        void this.db.put(idKey(this.name, id), [ns, key]);
        if (parent) void this.db.put(childKey(this.name, ns, parent, key), 1);
        if (ctx.lease) leaseRecordOps(this.db).add(ns, ctx.lease, snapshotLeaseResourceType(this.name), key);
        // Last, once every write above was taken (one that throws, say a key too long for the lease
        // record, undoes them all and leaves the staged directory where it was); a failed rename
        // throws too, undoing the writes.
        if (kind === SnapshotKinds.Active) this.recordEvent(ctx, SNAPSHOT_EVENTS.prepare, { key, parent });
        fs.renameSync(td, this.backend.dir(id));
        return { ok: rec };
      });
    } catch (e) {
      await removeTree(td);
      throw e;
    }
    if ("err" in res) {
      await removeTree(td);
      throw res.err;
    }
    return this.backend.mounts(res.ok.id, kind, res.ok.chain);
  }

  async commit(ctx: CallContext, name: string, key: string, opts?: SnapshotOptions): Promise<void> {
    const ns = namespaceRequired(ctx);
    if (!name) throw errInvalidArgument("snapshot name must not be empty");
    checkKeyLength("snapshot key", name);
    const labels = this.validateLabels(opts?.labels);
    await this.opts.ensureNamespace?.(ctx, ns);
    const res = await writeTxn(this.db, (): TxResult<true> => {
      if (this.record(ns, name)) return { err: errAlreadyExists(`snapshot ${JSON.stringify(name)}`) };
      const r = this.record(ns, key);
      if (!r) return { err: errNotFound(`snapshot ${key} does not exist`) };
      if (r.kind !== 2) return { err: errFailedPrecondition(`failed to commit snapshot: snapshot ${JSON.stringify(key)} is not active`) };
      const now = storedTime();
      const rec: SnapshotRecord = { id: r.id, kind: 3, parent: r.parent, chain: r.chain, labels, created: now, updated: now };
      void this.db.put(snapKey(this.name, ns, name), rec);
      void this.db.remove(snapKey(this.name, ns, key));
      void this.db.put(idKey(this.name, r.id), [ns, name]);
      if (r.parent) {
        void this.db.remove(childKey(this.name, ns, r.parent, key));
        void this.db.put(childKey(this.name, ns, r.parent, name), 1);
      }
      const leases = leaseRecordOps(this.db);
      const type = snapshotLeaseResourceType(this.name);
      leases.forgetResource(ns, type, key);
      if (ctx.lease) leases.add(ns, ctx.lease, type, name);
      this.recordEvent(ctx, SNAPSHOT_EVENTS.commit, { key, name });
      return { ok: true };
    });
    if ("err" in res) throw res.err;
  }

  async remove(ctx: CallContext, key: string): Promise<void> {
    const ns = namespaceRequired(ctx);
    // A removal by the garbage collector loses to a lease taken after the collector's last look.
    const bySweep = ctx.headers?.[GC_SWEEP_HEADER] !== undefined;
    const res = await writeTxn(this.db, (): TxResult<SnapshotRecord> => {
      const r = this.record(ns, key);
      if (!r) return { err: errNotFound(`snapshot ${key} does not exist`) };
      if (bySweep && leaseRecordOps(this.db).held(ns, snapshotLeaseResourceType(this.name), key)) {
        return { err: errFailedPrecondition(`snapshot ${key} is leased`) };
      }
      for (const _ of this.db.getKeys({ start: childKey(this.name, ns, key, ""), end: childKey(this.name, ns, key, MAX_KEY_PART), limit: 1 })) {
        return { err: errFailedPrecondition("cannot remove snapshot with child") };
      }
      void this.db.remove(snapKey(this.name, ns, key));
      void this.db.remove(idKey(this.name, r.id));
      if (r.parent) void this.db.remove(childKey(this.name, ns, r.parent, key));
      leaseRecordOps(this.db).forgetResource(ns, snapshotLeaseResourceType(this.name), key);
      this.recordEvent(ctx, SNAPSHOT_EVENTS.remove, { key });
      return { ok: r };
    });
    if ("err" in res) throw res.err;
    const p = discard(this.backend, res.ok.id, (err) => this.opts.log?.warn({ err, id: res.ok.id }, "removing snapshot directory failed"));
    this.pendingRemovals.add(p);
    void p.finally(() => this.pendingRemovals.delete(p));
  }

  async walk(ctx: CallContext, fn: WalkFn, filters: readonly string[] = []): Promise<void> {
    const ns = namespaceRequired(ctx);
    const filter = parseAll(filters);
    let start: Key = snapKey(this.name, ns, "");
    const end: Key = snapKey(this.name, ns, MAX_KEY_PART);
    let first = true;
    for (;;) {
      const batch: SnapshotInfo[] = [];
      let last: Key | undefined;
      for (const { key, value } of this.db.getRange({ start, end, limit: 100 })) {
        last = key;
        if (!first && String(key[3]) === String(start[3])) continue;
        batch.push(this.info(String(key[3]), value as SnapshotRecord));
      }
      first = false;
      for (const info of batch) if (filter.match(snapshotAdaptor(info))) await fn(info);
      if (!last || batch.length === 0) return;
      start = last;
    }
  }

  async cleanup(_ctx: CallContext): Promise<void> {
    await Promise.all([...this.pendingRemovals]);
    await removeUnknown(this.backend, (id) => this.db.get(idKey(this.name, id)) !== undefined, false);
  }

  /**
   * Start-up reconciliation (before serving): drop every directory no record owns (staging dirs of
   * interrupted prepares, half-removed snapshots, dirs renamed in a transaction that never committed)
   * and report records whose directory is gone.
   */
  async reconcile(): Promise<{ removed: string[]; missing: number[] }> {
    const removed = await removeUnknown(this.backend, (id) => this.db.get(idKey(this.name, id)) !== undefined, true);
    const missing: number[] = [];
    for (const { key } of this.db.getRange({ start: idKey(this.name, 0), end: idKey(this.name, Number.MAX_SAFE_INTEGER) })) {
      const id = Number(key[2]);
      const dir = this.backend.dir(id);
      if (!fs.existsSync(dir)) {
        missing.push(id);
        continue;
      }
      // Leftover staging of an interrupted layer apply next to an overlay upper directory.
      if (this.backend instanceof OverlayBackend) {
        for (const n of fs.readdirSync(dir)) if (n.startsWith(".apply-")) await removeTree(`${dir}/${n}`);
      }
    }
    if (removed.length || missing.length) this.opts.log?.warn({ snapshotter: this.name, removed, missing, root: snapshotsDir(this.backend.root) }, "reconciled snapshot directories");
    return { removed, missing };
  }
}
