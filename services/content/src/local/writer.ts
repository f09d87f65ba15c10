/**
 * An open ingest of the local store. Data is hashed as it arrives and copied into the page cache with
 * positional writes before the WRITE is acknowledged; write-back to disk runs in the background
 * (FLUSH_EVERY) while the next requests arrive. The resume point after a crash is the data file's
 * size, never more than what was acknowledged.
 */
import * as crypto from "node:crypto";
import { mkdir } from "node:fs/promises";
import * as path from "node:path";
import type { CallContext } from "#libs/context";
import { errFailedPrecondition, errNotFound } from "#libs/errdefs";
import type { ContentWriter, IngestStatus } from "#libs/core/content";
import { closeFile, fdatasyncFile, fstatFile, fsyncFile, ftruncateFile, openFile, readAt } from "./files";
import { writeAllSync } from "#libs/sys/pagecache";
import type { IngestRecord } from "./db";
import type { MessageBuffers } from "#libs/grpc/wire";
import { dateFromNanos, dateFromStored, nowNanos } from "#libs/time";

/** Start writing back to disk every this many bytes, so the fsync at commit has only the tail left. */
const FLUSH_EVERY = 32 << 20;
const HASH_CHUNK = 1 << 20;

/** What a writer needs from its store. */
export interface WriterHost {
  dataPath(rec: IngestRecord): string;
  blobPath(digest: string): string;
  /** Move the verified data file into place and record the blob in the namespace. */
  commitData(w: LocalWriter, digest: string, size: number, labels: Record<string, string> | undefined): Promise<void>;
  /** Record an existing blob (a shared ingest) in the namespace. */
  commitShared(w: LocalWriter, labels: Record<string, string> | undefined): Promise<void>;
  /** The writer is done with its ref (lock released). */
  release(w: LocalWriter): void;
  /** Where received messages come from: a written one's buffer goes back there. */
  readonly buffers?: MessageBuffers | undefined;
}

/** sha256 of the first `size` bytes of an open file. */
export async function hashFile(fd: number, size: number, hash: crypto.Hash): Promise<void> {
  const buf = Buffer.allocUnsafe(Math.min(HASH_CHUNK, Math.max(size, 1)));
  let pos = 0;
  while (pos < size) {
    const n = await readAt(fd, buf, 0, Math.min(buf.length, size - pos), pos);
    if (n === 0) throw new Error(`short read hashing ingest at ${pos} of ${size}`);
    hash.update(buf.subarray(0, n));
    pos += n;
  }
}

export class LocalWriter implements ContentWriter {
  private fd: number | undefined;
  private hash = crypto.createHash("sha256");
  private failure: Error | undefined;
  private unflushed = 0;
  private flushing: Promise<void> | undefined;
  private closed = false;
  private abortedBy: string | undefined;
  /** When data last came in, in nanoseconds since the epoch. */
  updated: bigint;

  constructor(
    private readonly host: WriterHost,
    readonly ctx: CallContext,
    readonly ns: string,
    readonly ref: string,
    readonly rec: IngestRecord,
    /** The blob size for a shared ingest (rec.expected set), else ignored. */
    private sharedSize: number,
    private offset: number,
  ) {
    this.updated = nowNanos();
  }

  /** Open the data file of a non-shared ingest: fresh (truncated) or resumed (hashing what is there). */
  static async open(host: WriterHost, ctx: CallContext, ns: string, ref: string, rec: IngestRecord, resume: boolean): Promise<LocalWriter> {
    const w = new LocalWriter(host, ctx, ns, ref, rec, 0, 0);
    const p = host.dataPath(rec);
    if (resume) {
      try {
        w.fd = await openFile(p, "r+");
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
      }
    }
    if (w.fd === undefined) {
      w.fd = await openFile(p, "w");
    } else {
      const { size } = await fstatFile(w.fd);
      await hashFile(w.fd, size, w.hash);
      w.offset = size;
    }
    return w;
  }

  static shared(host: WriterHost, ctx: CallContext, ns: string, ref: string, rec: IngestRecord, size: number): LocalWriter {
    return new LocalWriter(host, ctx, ns, ref, rec, size, size);
  }

  get isShared(): boolean {
    return this.fd === undefined && this.rec.expected !== "";
  }

  private check(): void {
    if (this.abortedBy !== undefined) throw errNotFound(`ingest ref ${JSON.stringify(this.ref)} was aborted`);
    if (this.closed) throw errFailedPrecondition(`writer for ref ${JSON.stringify(this.ref)} is closed`);
    if (this.failure) throw this.failure;
  }

  async status(): Promise<IngestStatus> {
    this.check();
    return this.snapshot();
  }

  /** The progress as known in memory (also while closing, when queued writes may not have landed yet). */
  snapshot(): IngestStatus {
    return {
      ref: this.ref,
      offset: this.offset,
      total: this.isShared ? this.sharedSize : this.rec.total,
      expected: this.isShared ? this.rec.expected : "",
      startedAt: dateFromStored(this.rec.started),
      updatedAt: dateFromNanos(this.updated),
    };
  }

  digest(): string {
    if (this.isShared) return this.rec.expected;
    return "sha256:" + this.hash.copy().digest("hex");
  }

  /**
   * A shared ingest that receives data becomes a real one, starting from the first `keep` bytes of the
   * existing blob (containerd copies them too).
   */
  private async unshare(keep: number): Promise<void> {
    const p = this.host.dataPath(this.rec);
    await mkdir(path.dirname(p), { recursive: true });
    const fd = await openFile(p, "w");
    this.fd = fd;
    this.offset = 0;
    this.hash = crypto.createHash("sha256");
    if (keep > 0) {
      const src = await openFile(this.host.blobPath(this.rec.expected), "r");
      try {
        const buf = Buffer.allocUnsafe(Math.min(HASH_CHUNK, keep));
        while (this.offset < keep) {
          const n = await readAt(src, buf, 0, Math.min(buf.length, keep - this.offset), this.offset);
          if (n === 0) throw new Error("short read copying shared blob");
          await this.write(buf.subarray(0, n));
          await this.drain();
        }
      } finally {
        await closeFile(src);
      }
    }
    this.rec.expected = "";
  }

  async write(data: Uint8Array): Promise<number> {
    this.check();
    if (data.length === 0) return this.offset;
    if (this.isShared) await this.unshare(this.sharedSize);
    const pos = this.offset;
    this.hash.update(data);
    this.offset += data.length;
    this.updated = nowNanos();
    const fd = this.fd!;
    try {
      // Synchronous, in page-cache sized pieces (libs/sys/pagecache): cheaper than a thread-pool hop.
      writeAllSync(fd, data, pos);
      this.unflushed += data.length;
      if (this.unflushed >= FLUSH_EVERY && !this.flushing) this.backgroundFlush(fd);
    } catch (e) {
      this.failure ??= e as Error;
    } finally {
      // Copied (or failed): a received message's buffer can serve the next one.
      this.host.buffers?.release(data);
    }
    if (this.failure) throw this.failure;
    return this.offset;
  }

  /** fdatasync in the background: the disk works while data is still arriving. */
  private backgroundFlush(fd: number): void {
    this.unflushed = 0;
    this.flushing = fdatasyncFile(fd).then(
      () => { this.flushing = undefined; },
      (e: Error) => { this.flushing = undefined; this.failure ??= e; },
    );
  }

  /** Wait for a background flush (so the descriptor can be closed). */
  private async drain(): Promise<void> {
    if (this.flushing) await this.flushing;
    if (this.failure) throw this.failure;
  }

  async truncate(size: number): Promise<void> {
    this.check();
    if (size !== 0) throw errFailedPrecondition("Truncate: unsupported size");
    if (this.isShared) {
      await this.unshare(0);
      return;
    }
    await this.drain();
    await ftruncateFile(this.fd!, 0);
    this.hash = crypto.createHash("sha256");
    this.offset = 0;
    this.updated = nowNanos();
  }

  async commit(size: number, expected: string, labels?: Record<string, string>): Promise<void> {
    this.check();
    try {
      if (this.isShared) {
        if (size !== 0 && size !== this.sharedSize) {
          throw errFailedPrecondition(`${JSON.stringify(this.ref)} failed size validation: ${this.sharedSize} != ${size}`);
        }
        if (expected && expected !== this.rec.expected) throw errFailedPrecondition(`${JSON.stringify(this.ref)} unexpected digest`);
        await this.host.commitShared(this, labels);
        return;
      }
      await this.drain();
      const fd = this.fd!;
      this.fd = undefined;
      try {
        await fsyncFile(fd);
      } finally {
        await closeFile(fd);
      }
      if (size !== 0 && size !== this.offset) {
        throw errFailedPrecondition(`${JSON.stringify(this.ref)} failed size validation: ${this.offset} != ${size}`);
      }
      const dgst = this.digest();
      if (expected && expected !== dgst) throw errFailedPrecondition(`unexpected commit digest ${dgst}, expected ${expected}`);
      await this.host.commitData(this, dgst, this.offset, labels);
    } finally {
      await this.close();
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      await this.drain().catch(() => undefined);
      const fd = this.fd;
      this.fd = undefined;
      if (fd !== undefined) await closeFile(fd).catch(() => undefined);
    } finally {
      if (this.abortedBy === undefined) this.host.release(this);
    }
  }

  /** Called by Abort while the writer is open: every later call fails with NotFound. */
  abort(reason: string): void {
    this.abortedBy = reason;
    this.host.release(this);
  }
}
