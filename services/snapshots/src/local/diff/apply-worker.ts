/**
 * Layer-apply worker thread. The main thread streams the compressed layer in (`chunk` messages,
 * acknowledged one by one for flow control), or names a local file holding it (`file`: the worker
 * reads it itself, so the bytes never cross the main thread). The worker hashes it (unless the main
 * thread checks the digest in parallel, `digestElsewhere`), decompresses it (gzip with zlib, zstd with
 * fzstd, or none, detected from the magic bytes), hashes and counts the tar stream, plans the apply
 * (apply-engine.ts) and, once the digest and size check out, executes it with synchronous system
 * calls, off the main event loop.
 */
import { createHash, type Hash } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { parentPort } from "node:worker_threads";
import * as zlib from "node:zlib";
import { Decompress as ZstdDecompress } from "fzstd";
import { ApplyPlan, ApplyRefused, executePlan, type ApplyTarget } from "./apply-engine";
import { TarError, TarReader } from "./tar";
import { gunzipWhole, gzipTrailerSize } from "#libs/sys/deflate";

export interface ApplyJob {
  target: ApplyTarget;
  allowDevices: boolean;
  maxUncompressedBytes: number;
  /** Compressed digest to verify ("" skips). */
  expectedDigest: string;
  /**
   * The caller verifies the compressed digest itself, in parallel (a local file it can read too): the
   * worker does not hash the compressed bytes, and once the layer is staged and its size checked it
   * reports `staged` and waits for a `verdict` before touching the target.
   */
  digestElsewhere?: boolean;
  /** Compressed size to verify (0 skips). */
  expectedSize: number;
  syncFs: boolean;
}

export type ToWorker =
  | { type: "start"; id: number; job: ApplyJob }
  | { type: "chunk"; id: number; data: Uint8Array }
  | { type: "file"; id: number; path: string }
  | { type: "end"; id: number }
  | { type: "abort"; id: number; reason: string }
  | { type: "verdict"; id: number; ok: boolean; message: string };
export type FromWorkerBody =
  | { type: "ack" }
  /**
   * The whole layer is inflated in `buffer` (shared memory, `size` bytes): the main thread hashes it
   * while the worker plans and applies, and reports that digest. The worker leaves the memory alone
   * until the job's result is taken.
   */
  | { type: "inflated"; buffer: SharedArrayBuffer; size: number }
  | { type: "staged" }
  /** `digest` is "" when the main thread hashes the inflated layer (`inflated`). */
  | { type: "done"; digest: string; size: number; entries: number }
  | { type: "error"; code: "invalid argument" | "internal" | "context canceled"; message: string; mismatch?: boolean };
export type FromWorker = FromWorkerBody & { id: number };

const GZIP_MAGIC = [0x1f, 0x8b];
const ZSTD_MAGIC = [0x28, 0xb5, 0x2f, 0xfd];
/** Read size and read-ahead (chunks handed to the decompressor, not yet consumed) for `file` jobs. */
const FILE_CHUNK = 1 << 20;
const FILE_WINDOW = 4;
/** zlib's output piece size, and how many inflated pieces may wait before zlib is paused. */
const INFLATE_CHUNK = 1 << 20;
const INFLATED_AHEAD = 2;
/**
 * A gzip layer in a local file of at most this size, whose trailer says it inflates to at most this
 * size, is read whole and inflated with libdeflate (twice zlib's speed) instead of streamed.
 */
const WHOLE_MAX = 64 << 20;
/** Slice of a whole inflated layer handed to the tar reader at a time. */
const WHOLE_SLICE = 1 << 20;
/** Whole-layer buffers are kept for the next job (warm memory) until the worker idles this long. */
const SCRATCH_IDLE_MS = 10_000;

const scratch: { in?: Buffer; out?: Buffer; timer?: NodeJS.Timeout } = {};

/** A reused buffer of at least `size` bytes (grown by doubling), dropped after SCRATCH_IDLE_MS unused. */
function scratchBuffer(which: "in" | "out", size: number): Buffer {
  let b = scratch[which];
  if (!b || b.length < size) {
    const n = Math.min(WHOLE_MAX, Math.max(size, (b?.length ?? 0) * 2));
    // The inflated layer is shared with the main thread, which hashes it.
    b = scratch[which] = which === "out" ? Buffer.from(new SharedArrayBuffer(n)) : Buffer.allocUnsafe(n);
  }
  if (scratch.timer) scratch.timer.refresh();
  else scratch.timer = setTimeout(() => {
    scratch.in = scratch.out = scratch.timer = undefined;
  }, SCRATCH_IDLE_MS).unref();
  return b;
}

/** The layer's bytes do not match its descriptor (digest or size). */
class Mismatch extends ApplyRefused {}

function stagingFor(root: string): string {
  const parent = path.dirname(root);
  try {
    if (fs.statSync(parent).dev === fs.statSync(root).dev && parent !== root) return fs.mkdtempSync(path.join(parent, ".apply-"));
  } catch {
    /* fall back to inside the root */
  }
  return fs.mkdtempSync(path.join(root, ".apply-"));
}

class Job {
  private readonly cHash?: Hash;
  private awaitingVerdict = false;
  private readonly uHash = createHash("sha256");
  /** The main thread hashes the uncompressed bytes (an `inflated` layer). */
  private uHashElsewhere = false;
  private cSize = 0;
  private uSize = 0;
  private head: Buffer[] = [];
  private headLen = 0;
  private mode?: "gzip" | "zstd" | "none";
  private gunzip?: zlib.Gunzip;
  /** Inflated pieces not yet hashed and applied, and whether zlib has given the last one. */
  private inflated: Buffer[] = [];
  private inflateEnded = false;
  private zstd?: ZstdDecompress;
  private readonly tar: TarReader;
  private readonly plan: ApplyPlan;
  private readonly staging: string;
  private finished = false;
  /** Wakes a waiting `pumpFile` (when the job ends early). */
  private wakePump?: () => void;

  constructor(private readonly job: ApplyJob, private readonly post: (m: FromWorkerBody) => void) {
    const algo = job.expectedDigest.split(":")[0] || "sha256";
    if (!job.digestElsewhere) this.cHash = createHash(algo);
    this.staging = stagingFor(job.target.root);
    this.plan = new ApplyPlan(job.target, { allowDevices: job.allowDevices }, this.staging);
    this.tar = new TarReader(this.plan);
  }

  private sink(d: Buffer): void {
    if (!this.uHashElsewhere) this.uHash.update(d);
    this.uSize += d.length;
    if (this.uSize > this.job.maxUncompressedBytes) throw new ApplyRefused(`layer expands beyond ${this.job.maxUncompressedBytes} bytes (decompression bomb?)`);
    this.tar.write(d);
  }

  private guard(fn: () => void): boolean {
    if (this.finished) return false;
    try {
      fn();
      return true;
    } catch (e) {
      this.fail(e);
      return false;
    }
  }

  /** Take the next compressed chunk; `ack` is called once it is consumed (flow control). */
  chunk(data: Buffer, ack: () => void): void {
    if (this.finished) return ack();
    this.cHash?.update(data);
    this.cSize += data.length;
    if (this.job.expectedSize > 0 && this.cSize > this.job.expectedSize) {
      this.fail(new Mismatch(`layer is larger than its descriptor's size ${this.job.expectedSize}`));
      return ack();
    }
    if (!this.mode) {
      this.head.push(data);
      this.headLen += data.length;
      if (this.headLen < 4) return ack();
      this.start(Buffer.concat(this.head), ack);
      this.head = [];
      return;
    }
    this.feed(data, ack);
  }

  /** Read the compressed layer from a local file, keeping a few chunks ahead of the decompressor. */
  async pumpFile(file: string): Promise<void> {
    if (this.applyWhole(file)) return;
    let fd = -1;
    try {
      fd = fs.openSync(file, "r");
      let inFlight = 0;
      let wake: (() => void) | undefined;
      const ack = (): void => {
        inFlight--;
        wake?.();
      };
      for (;;) {
        while (inFlight >= FILE_WINDOW && !this.finished) await new Promise<void>((r) => (wake = this.wakePump = r));
        if (this.finished) return;
        const buf = Buffer.allocUnsafe(FILE_CHUNK);
        const n = fs.readSync(fd, buf, 0, FILE_CHUNK, null);
        if (n === 0) break;
        inFlight++;
        this.chunk(n === FILE_CHUNK ? buf : buf.subarray(0, n), ack);
        // Let zlib's completions (and an abort) in between chunks.
        if (inFlight >= FILE_WINDOW) continue;
        await new Promise<void>((r) => setImmediate(r));
      }
      this.end();
    } catch (e) {
      this.fail(e);
    } finally {
      if (fd >= 0) fs.closeSync(fd);
    }
  }

  /**
   * A small enough gzip layer in a local file: read it whole, inflate it with libdeflate and apply it
   * as if streamed. False (nothing consumed) when it does not qualify or libdeflate declines it (corrupt
   * data, several members, a trailer that lies): the streaming path then reads the file again and
   * reports any error in its usual words.
   */
  private applyWhole(file: string): boolean {
    if (this.finished || this.mode || this.cSize > 0) return false;
    let input: Buffer;
    try {
      const fd = fs.openSync(file, "r");
      try {
        const size = fs.fstatSync(fd).size;
        if (size < 18 || size > WHOLE_MAX || (this.job.expectedSize > 0 && size !== this.job.expectedSize)) return false;
        input = scratchBuffer("in", size).subarray(0, size);
        let got = 0;
        while (got < size) {
          const n = fs.readSync(fd, input, got, size - got, got);
          if (n === 0) return false;
          got += n;
        }
      } finally {
        fs.closeSync(fd);
      }
    } catch {
      return false;
    }
    if (input[0] !== GZIP_MAGIC[0] || input[1] !== GZIP_MAGIC[1]) return false;
    const isize = gzipTrailerSize(input);
    if (isize === 0 || isize > WHOLE_MAX || isize > this.job.maxUncompressedBytes) return false;
    const out = scratchBuffer("out", isize);
    const r = gunzipWhole(input, out.subarray(0, isize));
    if (!r?.ok) return false;
    this.mode = "gzip";
    this.plan.inMemory = true;
    this.uHashElsewhere = true;
    this.post({ type: "inflated", buffer: out.buffer as SharedArrayBuffer, size: r.size });
    this.cHash?.update(input);
    this.cSize = input.length;
    for (let off = 0; off < r.size; off += WHOLE_SLICE) {
      const piece = out.subarray(off, Math.min(off + WHOLE_SLICE, r.size));
      if (!this.guard(() => this.sink(piece))) return true;
    }
    this.complete();
    return true;
  }

  private start(first: Buffer, ack: () => void): void {
    const is = (m: number[]): boolean => m.every((b, i) => first[i] === b);
    this.mode = is(GZIP_MAGIC) ? "gzip" : is(ZSTD_MAGIC) ? "zstd" : "none";
    if (this.mode === "gzip") {
      const gunzip = (this.gunzip = zlib.createGunzip({ chunkSize: INFLATE_CHUNK }));
      gunzip.on("data", (d: Buffer) => {
        // zlib starts inflating the next piece (on the thread pool) only once this handler returns:
        // hash and write the piece just after, so both run at once.
        this.inflated.push(d);
        if (this.inflated.length >= INFLATED_AHEAD) gunzip.pause();
        if (this.inflated.length === 1) queueMicrotask(() => this.drainInflated());
      });
      gunzip.on("error", (e) => this.fail(new ApplyRefused(`invalid gzip stream: ${e.message}`)));
      gunzip.on("end", () => {
        this.inflateEnded = true;
        if (this.inflated.length === 0) this.complete();
      });
    } else if (this.mode === "zstd") {
      this.zstd = new ZstdDecompress((d) => {
        if (!this.finished) this.sink(Buffer.from(d.buffer, d.byteOffset, d.byteLength));
      });
    }
    this.feed(first, ack);
  }

  /** Hash, count and apply the inflated pieces waiting, in order; then let zlib go on (or finish). */
  private drainInflated(): void {
    while (this.inflated.length > 0) {
      const d = this.inflated[0]!;
      if (!this.guard(() => this.sink(d))) {
        this.inflated = [];
        return;
      }
      this.inflated.shift();
    }
    if (this.finished) return;
    if (this.inflateEnded) return this.complete();
    if (this.gunzip?.isPaused()) this.gunzip.resume();
  }

  private feed(data: Buffer, ack: () => void): void {
    switch (this.mode) {
      case "gzip":
        if (this.finished) return ack();
        this.gunzip!.write(data, () => ack());
        return;
      case "zstd":
        this.guard(() => {
          try {
            this.zstd!.push(data);
          } catch (e) {
            if (e instanceof ApplyRefused || e instanceof TarError) throw e;
            throw new ApplyRefused(`invalid zstd stream: ${(e as Error).message}`);
          }
        });
        return ack();
      default:
        this.guard(() => this.sink(data));
        return ack();
    }
  }

  end(): void {
    if (this.finished) return;
    if (!this.mode) {
      const first = Buffer.concat(this.head);
      this.head = [];
      if (first.length === 0) {
        this.mode = "none";
        return this.complete();
      }
      this.mode = "none";
      if (!this.guard(() => this.sink(first))) return;
      return this.complete();
    }
    switch (this.mode) {
      case "gzip":
        this.gunzip!.end();
        return;
      case "zstd":
        if (!this.guard(() => {
          try {
            this.zstd!.push(new Uint8Array(0), true);
          } catch (e) {
            if (e instanceof ApplyRefused || e instanceof TarError) throw e;
            throw new ApplyRefused(`invalid zstd stream: ${(e as Error).message}`);
          }
        })) return;
        return this.complete();
      default:
        return this.complete();
    }
  }

  private complete(): void {
    this.guard(() => {
      this.tar.end();
      this.plan.entryEnd();
      if (this.cHash) {
        const digest = `${this.job.expectedDigest.split(":")[0] || "sha256"}:${this.cHash.digest("hex")}`;
        if (this.job.expectedDigest && digest !== this.job.expectedDigest) throw new Mismatch(`layer digest mismatch: got ${digest}, expected ${this.job.expectedDigest}`);
      }
      if (this.job.expectedSize > 0 && this.cSize !== this.job.expectedSize) throw new Mismatch(`layer size mismatch: got ${this.cSize}, expected ${this.job.expectedSize}`);
      if (!this.cHash) {
        this.awaitingVerdict = true;
        this.post({ type: "staged" });
        return;
      }
      this.execute();
    });
  }

  /** The caller's answer on the compressed digest (`digestElsewhere` jobs). */
  verdict(ok: boolean, message: string): void {
    if (this.finished || !this.awaitingVerdict) return;
    this.awaitingVerdict = false;
    if (!ok) return this.fail(new Mismatch(message));
    this.guard(() => this.execute());
  }

  private execute(): void {
    executePlan(this.plan, this.job.target);
    this.cleanup();
    this.finished = true;
    this.post({ type: "done", digest: this.uHashElsewhere ? "" : `sha256:${this.uHash.digest("hex")}`, size: this.uSize, entries: this.plan.entries });
  }

  fail(e: unknown, code?: "context canceled"): void {
    if (this.finished) return;
    this.finished = true;
    this.wakePump?.();
    this.plan.abandon();
    this.gunzip?.destroy();
    this.cleanup();
    const refused = e instanceof ApplyRefused || e instanceof TarError;
    const mismatch = e instanceof Mismatch || undefined;
    this.post({ type: "error", code: code ?? (refused ? "invalid argument" : "internal"), message: refused ? `invalid layer: ${(e as Error).message}` : `apply failed: ${(e as Error).message ?? String(e)}`, mismatch });
  }

  private cleanup(): void {
    try {
      fs.rmSync(this.staging, { recursive: true, force: true });
    } catch {
      /* best effort */
    }
  }
}

if (parentPort) {
  const port = parentPort;
  let job: Job | undefined;
  let jobId = -1;
  port.on("message", (m: ToWorker) => {
    const current = m.id === jobId ? job : undefined;
    switch (m.type) {
      case "start":
        jobId = m.id;
        try {
          job = new Job(m.job, (r) => port.postMessage({ ...r, id: m.id } satisfies FromWorker));
        } catch (e) {
          job = undefined;
          port.postMessage({ id: m.id, type: "error", code: "internal", message: `apply failed: ${(e as Error).message}` } satisfies FromWorker);
        }
        return;
      case "chunk": {
        const ack = (): void => port.postMessage({ id: m.id, type: "ack" } satisfies FromWorker);
        if (current) current.chunk(Buffer.from(m.data.buffer, m.data.byteOffset, m.data.byteLength), ack);
        else ack();
        return;
      }
      case "file":
        void current?.pumpFile(m.path);
        return;
      case "end":
        current?.end();
        return;
      case "abort":
        current?.fail(new Error(m.reason), "context canceled");
        return;
      case "verdict":
        current?.verdict(m.ok, m.message);
        return;
    }
  });
}
