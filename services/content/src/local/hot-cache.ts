/**
 * What `ctr images ls` and every image walk read over and over: one blob record (Info, then again at
 * Read) and the bytes of small blobs (indexes, manifests, configs), a few thousand calls for a few
 * distinct digests. Both are kept here so those calls skip LMDB decoding and file reads.
 *
 * - Records: read-through, bounded, keyed by namespace and digest. The store is the only writer of blob
 *   records and calls `forget` at each write, before its transaction and again after it settles, so a
 *   reader never keeps a value older than the last committed one.
 * - Bytes: a digest names its bytes for good, so a cached copy stays right as long as the blob's file
 *   exists; the store drops it where it removes the file. Only blobs up to `smallBytes` are kept, within
 *   `budgetBytes` in all.
 */
import type { BlobRecord } from "./db";

export interface HotCacheOptions {
  maxRecords?: number;
  smallBytes?: number;
  budgetBytes?: number;
}

export class HotCache {
  private readonly records = new Map<string, BlobRecord | null>();
  private readonly bytes = new Map<string, Buffer>();
  private bytesHeld = 0;
  readonly smallBytes: number;
  private readonly maxRecords: number;
  private readonly budgetBytes: number;

  constructor(opts: HotCacheOptions = {}) {
    this.maxRecords = opts.maxRecords ?? 8192;
    this.smallBytes = opts.smallBytes ?? 64 * 1024;
    this.budgetBytes = opts.budgetBytes ?? 16 << 20;
  }

  /** The blob record of (ns, digest): cached, else `load`ed (and cached, absent ones too). */
  record(ns: string, digest: string, load: () => BlobRecord | undefined): BlobRecord | undefined {
    const k = `${ns}\u0000${digest}`;
    const hit = this.records.get(k);
    if (hit !== undefined) return hit ?? undefined;
    const r = load();
    if (this.records.size >= this.maxRecords) this.records.delete(this.records.keys().next().value!);
    this.records.set(k, r ?? null);
    return r;
  }

  /** A blob record is being written: the next read goes to the database. */
  forget(ns: string, digest: string): void {
    this.records.delete(`${ns}\u0000${digest}`);
  }

  /** The bytes of a small blob, when held. */
  blob(digest: string): Buffer | undefined {
    const b = this.bytes.get(digest);
    if (b) {
      this.bytes.delete(digest);
      this.bytes.set(digest, b);
    }
    return b;
  }

  /** Keep a small blob's bytes (least recently used ones go beyond the budget). */
  keepBlob(digest: string, data: Buffer): void {
    if (data.length > this.smallBytes || this.bytes.has(digest)) return;
    this.bytes.set(digest, data);
    this.bytesHeld += data.length;
    for (const [d, b] of this.bytes) {
      if (this.bytesHeld <= this.budgetBytes) break;
      this.bytes.delete(d);
      this.bytesHeld -= b.length;
    }
  }

  /** The blob's file is gone. */
  dropBlob(digest: string): void {
    const b = this.bytes.get(digest);
    if (!b) return;
    this.bytes.delete(digest);
    this.bytesHeld -= b.length;
  }
}
