/**
 * The local ContentStore: blob bytes once on disk under `<root>/blobs/sha256/<hex>` (read-only, fsync'ed
 * and renamed into place), ingests under `<root>/ingest/<sha256(ns, ref)>/data`, and who-owns-what in
 * LMDB (see db.ts). A blob is visible only in the namespaces that committed it; its file goes when the
 * last owner deletes it.
 *
 * Crash safety: a blob file appears at its final path only complete and verified; it becomes visible
 * only once the LMDB transaction recording it is committed (and synced: see libs/lmdb writeTxn). Whatever a crash leaves between
 * the two steps (a file nobody owns, an ingest directory with no record) is removed at start.
 */
import { writeTxn } from "#libs/lmdb";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import type { Logger } from "pino";
import { namespaceRequired, type CallContext } from "#libs/context";
import { errAlreadyExists, errInvalidArgument, errNotFound, errFailedPrecondition } from "#libs/errdefs";
import { applyMapMask, compactLabels, validateLabels } from "#libs/fieldmask";
import { parseAll } from "#libs/filters";
import type { EventRecorder } from "#libs/events";
import type { MessageBuffers } from "#libs/grpc/wire";
import {
  CONTENT_EVENTS,
  LEASE_RESOURCE_CONTENT,
  LEASE_RESOURCE_INGESTS,
  isValidDigest,
  type ContentInfo,
  type ContentReaderAt,
  type ContentStore,
  type ContentWriter,
  type IngestStatus,
  type WriterOptions,
} from "#libs/core/content";
import { infoAdaptor, statusAdaptor } from "./adaptors";
import { blobFile } from "../../public";
import { blobKey, hasOwner, heldByLease, ingestKey, ingestRecord, ingestRef, leaseKey, leaseValue, ownerKey, scanPrefix, sharedKey, toInfo, type BlobRecord, type ContentDB, type IngestRecord } from "./db";
import { GC_SWEEP_HEADER } from "#libs/core/gc";
import { fsyncDir, readAt, statOrUndefined, unlinkIfExists } from "./files";
import { OpenBlobs, type OpenBlob } from "./open-blobs";
import { HotCache } from "./hot-cache";
import { RefLocks } from "./locks";
import { KeyedMutex } from "#libs/sync";
import { LocalWriter, type WriterHost } from "./writer";
import { dateFromNanos, dateFromStored, storedTime } from "#libs/time";

const DAY = 24 * 3600 * 1000;

export interface LocalContentStoreOptions {
  /** The content root (e.g. `<root>/content`). */
  root: string;
  db: ContentDB;
  /** Publishes /content/create and /content/delete. */
  events?: EventRecorder;
  /** Called before the first write in a namespace (containerd creates namespaces on first write). */
  ensureNamespace?: (ctx: CallContext, ns: string) => Promise<void>;
  log?: Logger;
  /** The process's message buffers: a written message's buffer goes back to them. */
  buffers?: MessageBuffers;
}

function checkDigest(d: string): void {
  if (!isValidDigest(d)) throw errInvalidArgument(`${JSON.stringify(d)} failed validation`);
}


/** Reads at most this much synchronously (a page-cache hit costs less than a thread-pool round trip). */
const SYNC_READ_MAX = 256 * 1024;

class LocalReaderAt implements ContentReaderAt {
  constructor(private readonly blob: OpenBlob) {}
  get size(): number {
    return this.blob.size;
  }
  readAt(buf: Uint8Array, position: number): Promise<number> {
    if (position >= this.size) return Promise.resolve(0);
    const len = Math.min(buf.length, this.size - position);
    if (len <= SYNC_READ_MAX) {
      try {
        return Promise.resolve(fs.readSync(this.blob.fd, buf, 0, len, position));
      } catch (e) {
        return Promise.reject(e);
      }
    }
    return readAt(this.blob.fd, buf, 0, len, position);
  }
  async close(): Promise<void> {
    this.blob.release();
  }
}

/** A small blob served from memory (see HotCache). */
class BufferReaderAt implements ContentReaderAt {
  constructor(private readonly data: Buffer) {}
  get size(): number {
    return this.data.length;
  }
  readAt(buf: Uint8Array, position: number): Promise<number> {
    if (position >= this.data.length) return Promise.resolve(0);
    return Promise.resolve(this.data.copy(buf, 0, position, Math.min(this.data.length, position + buf.length)));
  }
  async close(): Promise<void> {}
}

export class LocalContentStore implements ContentStore, WriterHost {
  private readonly db: ContentDB;
  private readonly refLocks = new RefLocks();
  private readonly digestLocks = new KeyedMutex();
  private readonly active = new Map<string, LocalWriter>();
  private readonly openBlobs = new OpenBlobs();
  private readonly hot = new HotCache();

  get buffers(): MessageBuffers | undefined {
    return this.opts.buffers;
  }

  private constructor(private readonly opts: LocalContentStoreOptions) {
    this.db = opts.db;
  }

  /** Open the store at `opts.root`, creating its layout and cleaning up what a crash left behind. */
  static async open(opts: LocalContentStoreOptions): Promise<LocalContentStore> {
    const s = new LocalContentStore(opts);
    await fs.promises.mkdir(path.join(opts.root, "blobs", "sha256"), { recursive: true });
    await fs.promises.mkdir(path.join(opts.root, "ingest"), { recursive: true });
    await s.recover();
    return s;
  }

  private async recover(): Promise<void> {
    const dirs = new Set<string>();
    for (const { value } of scanPrefix<IngestRecord>(this.db, ["i"])) dirs.add(value.dir);
    for (const d of await fs.promises.readdir(path.join(this.opts.root, "ingest"))) {
      if (!dirs.has(d)) await fs.promises.rm(path.join(this.opts.root, "ingest", d), { recursive: true, force: true });
    }
    const blobs = path.join(this.opts.root, "blobs", "sha256");
    let removed = 0;
    for (const f of await fs.promises.readdir(blobs)) {
      if (!/^[a-f0-9]{64}$/.test(f) || !this.referenced("sha256:" + f)) {
        await unlinkIfExists(path.join(blobs, f));
        removed++;
      }
    }
    if (removed) this.opts.log?.info({ removed }, "removed blob files no namespace owns");
  }

  blobPath(digest: string): string {
    return blobFile(this.opts.root, digest);
  }

  /** The blob record of (ns, digest), through the hot cache. */
  private blobRecord(ns: string, digest: string): BlobRecord | undefined {
    return this.hot.record(ns, digest, () => this.db.get(blobKey(ns, digest)) as BlobRecord | undefined);
  }

  /** The blob's file is gone (or going): drop what is cached of it. */
  private fileRemoved(digest: string): void {
    this.openBlobs.evict(digest);
    this.hot.dropBlob(digest);
  }

  dataPath(rec: IngestRecord): string {
    return path.join(this.opts.root, "ingest", rec.dir, "data");
  }

  private ingestDir(rec: IngestRecord): string {
    return path.join(this.opts.root, "ingest", rec.dir);
  }

  /** Owned by a namespace, or pinned by a shared ingest. */
  private referenced(digest: string): boolean {
    if (hasOwner(this.db, digest)) return true;
    for (const _ of scanPrefix(this.db, ["s", digest])) return true;
    return false;
  }

  /** Record the event in the outbox, in the write transaction of the change it describes. */
  private recordEvent(ctx: CallContext, ev: { topic: string; type: string }, body: Record<string, unknown>): void {
    this.opts.events?.record(this.db, ctx, ev.topic, ev.type, body);
  }

  // ---- Provider / Manager ----

  async info(ctx: CallContext, digest: string): Promise<ContentInfo> {
    const ns = namespaceRequired(ctx);
    checkDigest(digest);
    const r = this.blobRecord(ns, digest);
    if (!r) throw errNotFound(`content digest ${digest}`);
    return toInfo(digest, r);
  }

  async update(ctx: CallContext, info: Pick<ContentInfo, "digest" | "labels">, paths: readonly string[]): Promise<ContentInfo> {
    const ns = namespaceRequired(ctx);
    checkDigest(info.digest);
    for (const p of paths) {
      if (p !== "labels" && !p.startsWith("labels.")) {
        throw errInvalidArgument(`cannot update ${JSON.stringify(p)} field on content info ${JSON.stringify(info.digest)}`);
      }
    }
    const res = await writeTxn(this.db, () => {
      this.hot.forget(ns, info.digest);
      const cur = this.db.get(blobKey(ns, info.digest)) as BlobRecord | undefined;
      if (!cur) return undefined;
      const labels = paths.length ? applyMapMask("labels", cur.labels, info.labels, paths) : compactLabels(info.labels);
      const bad = validateLabels(labels);
      if (bad) return { bad };
      const next: BlobRecord = { ...cur, labels, updated: storedTime() };
      void this.db.put(blobKey(ns, info.digest), next);
      return { next };
    }).finally(() => this.hot.forget(ns, info.digest));
    if (!res) throw errNotFound(`content digest ${info.digest}`);
    if ("bad" in res) throw errInvalidArgument(`info.Labels: ${res.bad}`);
    return toInfo(info.digest, res.next!);
  }

  async walk(ctx: CallContext, fn: (info: ContentInfo) => void | Promise<void>, filters?: readonly string[]): Promise<void> {
    const ns = namespaceRequired(ctx);
    const f = parseAll(filters);
    const matched: ContentInfo[] = [];
    for (const { key, value } of scanPrefix<BlobRecord>(this.db, ["b", ns])) {
      const info = toInfo(String(key[2]), value);
      if (f.match(infoAdaptor(info))) matched.push(info);
    }
    for (const info of matched) await fn(info);
  }

  async delete(ctx: CallContext, digest: string): Promise<void> {
    const ns = namespaceRequired(ctx);
    checkDigest(digest);
    const lease = ctx.lease;
    // A delete by the garbage collector loses to a lease taken after the collector's last look.
    const bySweep = ctx.headers?.[GC_SWEEP_HEADER] !== undefined;
    const found = await this.digestLocks.run(digest, async () => {
      const last = await writeTxn(this.db, () => {
        this.hot.forget(ns, digest);
        if (this.db.get(blobKey(ns, digest)) === undefined) return undefined;
        if (bySweep && heldByLease(this.db, ns, LEASE_RESOURCE_CONTENT, digest)) return "leased" as const;
        void this.db.remove(blobKey(ns, digest));
        void this.db.remove(ownerKey(digest, ns));
        if (lease) void this.db.remove(leaseKey(ns, lease, LEASE_RESOURCE_CONTENT, digest));
        this.recordEvent(ctx, CONTENT_EVENTS.delete, { digest });
        return !this.referenced(digest);
      }).finally(() => this.hot.forget(ns, digest));
      if (last === undefined) return false;
      if (last === "leased") throw errFailedPrecondition(`content digest ${digest} is leased`);
      if (last) {
        this.fileRemoved(digest);
        await unlinkIfExists(this.blobPath(digest));
      }
      return true;
    });
    if (!found) throw errNotFound(`content digest ${digest}`);
  }

  async readerAt(ctx: CallContext, digest: string): Promise<ContentReaderAt> {
    const ns = namespaceRequired(ctx);
    checkDigest(digest);
    const r = this.blobRecord(ns, digest);
    if (!r) throw errNotFound(`content digest ${digest}`);
    const held = this.hot.blob(digest);
    if (held) return new BufferReaderAt(held);
    try {
      const blob = await this.openBlobs.acquire(digest, this.blobPath(digest));
      if (blob.size > this.hot.smallBytes) return new LocalReaderAt(blob);
      try {
        const data = Buffer.allocUnsafe(blob.size);
        let n = 0;
        while (n < data.length) {
          const k = fs.readSync(blob.fd, data, n, data.length - n, n);
          if (k === 0) break;
          n += k;
        }
        const bytes = data.subarray(0, n);
        if (n === blob.size) this.hot.keepBlob(digest, bytes);
        return new BufferReaderAt(bytes);
      } finally {
        blob.release();
      }
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") throw errNotFound(`blob ${digest} expected at ${this.blobPath(digest)}`);
      throw e;
    }
  }

  // ---- IngestManager ----

  private async statusOf(ns: string, ref: string, rec: IngestRecord): Promise<IngestStatus> {
    const w = this.active.get(lockKey(ns, ref));
    if (w) return w.snapshot();
    if (rec.expected) {
      const st = await statOrUndefined(this.blobPath(rec.expected));
      const size = st?.size ?? 0;
      return { ref, offset: size, total: size, expected: rec.expected, startedAt: dateFromStored(rec.started), updatedAt: dateFromStored(rec.started) };
    }
    const st = await statOrUndefined(this.dataPath(rec), true);
    return {
      ref,
      offset: Number(st?.size ?? 0),
      total: rec.total,
      expected: "",
      startedAt: dateFromStored(rec.started),
      updatedAt: st ? dateFromNanos(st.mtimeNs) : dateFromStored(rec.started),
    };
  }

  async status(ctx: CallContext, ref: string): Promise<IngestStatus> {
    const ns = namespaceRequired(ctx);
    const rec = this.db.get(ingestKey(ns, ref)) as IngestRecord | undefined;
    if (!rec) throw errNotFound(`reference ${ref}`);
    return this.statusOf(ns, ref, rec);
  }

  async listStatuses(ctx: CallContext, filters?: readonly string[]): Promise<IngestStatus[]> {
    const ns = namespaceRequired(ctx);
    const f = parseAll(filters);
    const recs = [...scanPrefix<IngestRecord>(this.db, ["i", ns])];
    const out: IngestStatus[] = [];
    for (const { key, value } of recs) {
      const st = await this.statusOf(ns, ingestRef(key, value), value);
      if (f.match(statusAdaptor(st))) out.push(st);
    }
    return out;
  }

  /** Remove an ingest's records (inside a transaction); returns the record, if there was one. */
  private dropIngest(ns: string, ref: string): IngestRecord | undefined {
    const rec = this.db.get(ingestKey(ns, ref)) as IngestRecord | undefined;
    if (!rec) return undefined;
    void this.db.remove(ingestKey(ns, ref));
    if (rec.expected) void this.db.remove(sharedKey(rec.expected, ns, ref));
    if (rec.lease) void this.db.remove(leaseKey(ns, rec.lease, LEASE_RESOURCE_INGESTS, ref));
    return rec;
  }

  async abort(ctx: CallContext, ref: string): Promise<void> {
    const ns = namespaceRequired(ctx);
    const bySweep = ctx.headers?.[GC_SWEEP_HEADER] !== undefined;
    const rec = await writeTxn(this.db, () => {
      if (bySweep && this.db.get(ingestKey(ns, ref)) !== undefined && heldByLease(this.db, ns, LEASE_RESOURCE_INGESTS, ref)) return "leased" as const;
      return this.dropIngest(ns, ref);
    });
    if (rec === "leased") throw errFailedPrecondition(`reference ${ref} is leased`);
    if (!rec) throw errNotFound(`reference ${ref}`);
    this.active.get(lockKey(ns, ref))?.abort("aborted");
    await fs.promises.rm(this.ingestDir(rec), { recursive: true, force: true });
    if (rec.expected) await this.removeIfUnreferenced(rec.expected);
  }

  private async removeIfUnreferenced(digest: string): Promise<void> {
    await this.digestLocks.run(digest, async () => {
      if (!this.referenced(digest)) {
        this.fileRemoved(digest);
        await unlinkIfExists(this.blobPath(digest));
      }
    });
  }

  /** Close cached descriptors (at shutdown). */
  close(): void {
    this.openBlobs.closeAll();
  }

  // ---- Ingester ----

  async writer(ctx: CallContext, opts: WriterOptions): Promise<ContentWriter> {
    const ns = namespaceRequired(ctx);
    const ref = opts.ref;
    if (!ref) throw errInvalidArgument("ref must not be empty");
    const expected = opts.expected ?? "";
    const total = opts.total ?? 0;
    if (expected) checkDigest(expected);
    if (total < 0) throw errInvalidArgument(`total ${total} must not be negative`);
    const lease = ctx.lease;
    if (expected && this.db.get(blobKey(ns, expected)) !== undefined) {
      if (lease) await this.db.put(leaseKey(ns, lease, LEASE_RESOURCE_CONTENT, expected), 1);
      throw errAlreadyExists(`content ${expected}`);
    }
    const lk = lockKey(ns, ref);
    await this.refLocks.lock(lk, ref);
    try {
      await this.opts.ensureNamespace?.(ctx, ns);
      const w = await this.openWriter(ctx, ns, ref, total, expected);
      this.active.set(lk, w);
      return w;
    } catch (e) {
      this.refLocks.unlock(lk);
      throw e;
    }
  }

  private async openWriter(ctx: CallContext, ns: string, ref: string, total: number, expected: string): Promise<LocalWriter> {
    const lease = ctx.lease;
    const now = storedTime();
    const fresh = (exp: string, tot: number): IngestRecord => ({
      dir: ingestDirName(ns, ref),
      total: tot,
      expected: exp,
      started: now,
      ...(lease ? { lease } : { expires: Date.now() + DAY }),
    });
    const put = (rec: IngestRecord): void => {
      const old = this.db.get(ingestKey(ns, ref)) as IngestRecord | undefined;
      if (old?.expected && old.expected !== rec.expected) void this.db.remove(sharedKey(old.expected, ns, ref));
      if (old?.lease && old.lease !== rec.lease) void this.db.remove(leaseKey(ns, old.lease, LEASE_RESOURCE_INGESTS, ref));
      void this.db.put(ingestKey(ns, ref), ingestRecord(ref, rec));
      if (rec.expected) void this.db.put(sharedKey(rec.expected, ns, ref), 1);
      if (rec.lease) void this.db.put(leaseKey(ns, rec.lease, LEASE_RESOURCE_INGESTS, ref), leaseValue(ref));
    };

    // Shared content: the blob is on disk (another namespace owns it); no data is needed.
    if (expected) {
      const shared = await this.digestLocks.run(expected, async () => {
        const st = await statOrUndefined(this.blobPath(expected));
        if (!st || (total !== 0 && total !== st.size)) return undefined;
        const rec = fresh(expected, st.size);
        const prev = this.db.get(ingestKey(ns, ref)) as IngestRecord | undefined;
        if (prev?.expected === expected) rec.started = prev.started;
        await writeTxn(this.db, () => put(rec));
        return LocalWriter.shared(this, ctx, ns, ref, rec, st.size);
      });
      if (shared) return shared;
    }

    const prev = this.db.get(ingestKey(ns, ref)) as IngestRecord | undefined;
    const resume = !!prev && !prev.expected && !(total > 0 && prev.total > 0 && total !== prev.total);
    let rec: IngestRecord;
    if (resume) {
      rec = { ...prev, total: prev.total || total };
      if (lease) rec.lease = lease;
      if (rec.total !== prev.total || rec.lease !== prev.lease) await writeTxn(this.db, () => put(rec));
    } else {
      rec = fresh("", total);
      await writeTxn(this.db, () => put(rec));
    }
    await fs.promises.mkdir(this.ingestDir(rec), { recursive: true });
    return LocalWriter.open(this, ctx, ns, ref, rec, resume);
  }

  release(w: LocalWriter): void {
    const lk = lockKey(w.ns, w.ref);
    if (this.active.get(lk) === w) {
      this.active.delete(lk);
      this.refLocks.unlock(lk);
    }
  }

  /** Record `digest` in the writer's namespace and drop its ingest; returns whether it was already there. */
  private async record(w: LocalWriter, digest: string, size: number, labels: Record<string, string>): Promise<boolean> {
    const lease = w.ctx.lease;
    const now = storedTime();
    const res = await writeTxn(this.db, () => {
      this.hot.forget(w.ns, digest);
      const rec = this.db.get(ingestKey(w.ns, w.ref)) as IngestRecord | undefined;
      if (!rec || rec.dir !== w.rec.dir) return "aborted" as const;
      this.dropIngest(w.ns, w.ref);
      const had = this.db.get(blobKey(w.ns, digest)) !== undefined;
      if (!had) {
        void this.db.put(blobKey(w.ns, digest), { size, created: now, updated: now, labels } satisfies BlobRecord);
        void this.db.put(ownerKey(digest, w.ns), 1);
        this.recordEvent(w.ctx, CONTENT_EVENTS.create, { digest, size });
      }
      if (lease) void this.db.put(leaseKey(w.ns, lease, LEASE_RESOURCE_CONTENT, digest), 1);
      return had ? ("exists" as const) : ("created" as const);
    }).finally(() => this.hot.forget(w.ns, digest));
    if (res === "aborted") throw errNotFound(`ingest ref ${JSON.stringify(w.ref)} was aborted`);
    return res === "exists";
  }

  async commitData(w: LocalWriter, digest: string, size: number, labels: Record<string, string> | undefined): Promise<void> {
    const lbls = compactLabels(labels);
    const bad = validateLabels(lbls);
    if (bad) throw errInvalidArgument(`info.Labels: ${bad}`);
    const existed = await this.digestLocks.run(digest, async () => {
      const data = this.dataPath(w.rec);
      const target = this.blobPath(digest);
      if (await statOrUndefined(target)) {
        await unlinkIfExists(data);
      } else {
        await fs.promises.chmod(data, 0o444);
        await fs.promises.rename(data, target);
        await fsyncDir(path.dirname(target));
      }
      try {
        return await this.record(w, digest, size, lbls);
      } catch (e) {
        if (!this.referenced(digest)) {
          this.fileRemoved(digest);
          await unlinkIfExists(target);
        }
        throw e;
      }
    });
    await fs.promises.rm(this.ingestDir(w.rec), { recursive: true, force: true });
    if (existed) throw errAlreadyExists(`content ${digest}`);
  }

  async commitShared(w: LocalWriter, labels: Record<string, string> | undefined): Promise<void> {
    const lbls = compactLabels(labels);
    const bad = validateLabels(lbls);
    if (bad) throw errInvalidArgument(`info.Labels: ${bad}`);
    const digest = w.rec.expected;
    const st = await w.status();
    const existed = await this.digestLocks.run(digest, async () => {
      if (!(await statOrUndefined(this.blobPath(digest)))) throw errNotFound(`content ${digest}`);
      return this.record(w, digest, st.total, lbls);
    });
    await fs.promises.rm(this.ingestDir(w.rec), { recursive: true, force: true });
    if (existed) throw errAlreadyExists(`content ${digest}`);
  }
}

function lockKey(ns: string, ref: string): string {
  return `${ns}\u0000${ref}`;
}

function ingestDirName(ns: string, ref: string): string {
  return crypto.createHash("sha256").update(`${ns}\u0000${ref}`).digest("hex");
}
