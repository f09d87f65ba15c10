/**
 * The walking differ (containerd's `io.containerd.differ.v1 walking`): Applier and Comparer over the
 * content service.
 *
 * Apply streams the blob to a worker thread (apply-worker.ts) that verifies, decompresses, validates
 * and applies it. Targets: a single overlay mount with an upperdir is applied to the upper directory
 * with overlay whiteouts (lower layers consulted for path resolution and directory copy-up), a single
 * writable bind mount to its source; anything else is mounted on a temporary directory first.
 * Compare mounts both sides read-only, double-walks them (compare.ts), gzips the tar and writes it to
 * the content service with the `containerd.io/uncompressed` label.
 */
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { Worker } from "node:worker_threads";
import * as zlib from "node:zlib";
import type { Logger } from "pino";
import type { CallContext } from "#libs/context";
import { errCanceled, errInternal, errInvalidArgument, errNotImplemented, FlotillaError, ErrorCodes } from "#libs/errdefs";
import { LABEL_UNCOMPRESSED, LayerMediaTypes, layerCompression, type Applier, type ApplyOptions, type Comparer, type Descriptor, type DiffOptions } from "#libs/core/diff";
import type { Mount } from "#libs/core/snapshots";
import type { ConfigOf } from "#libs/service/components";
import type { WALKING_DIFFER } from "#services/snapshots/components";
import { isReadOnly, withTempMount } from "#libs/mount";
import { repoRoot } from "#libs/proto";
import type { ApplyTarget } from "./apply-engine";
import type { ApplyJob, FromWorker, ToWorker } from "./apply-worker";
import { writeDiff } from "./compare";
import { uniqueRef, type LayerContent } from "./content";

export interface DifferConfig {
  /** A layer whose tar stream is larger than this is refused (decompression bomb). */
  maxUncompressedBytes: number;
  /** Whether layers may create character and block devices. */
  allowDevices: boolean;
  /** Apply worker threads. */
  workers: number;
  /** Where temporary mounts go. */
  tmpDir: string;
}

/** The differ's settings from its checked `[plugins."io.containerd.differ.v1.walking"]` table. */
export function differConfig(raw: ConfigOf<typeof WALKING_DIFFER>, tmpDir = path.join(os.tmpdir(), "flotilla-differ")): DifferConfig {
  return {
    maxUncompressedBytes: raw.max_uncompressed_bytes ?? 64 * 1024 ** 3,
    allowDevices: raw.allow_devices ?? true,
    workers: Math.max(1, raw.workers ?? Math.min(4, Math.max(2, os.cpus().length))),
    tmpDir: raw.tmp_dir || tmpDir,
  };
}

/** Worker failures that mean "the bytes did not match the descriptor" (a local file may be stale: stream instead). */
const mismatched = new WeakSet<Error>();

const DIGEST_RE = /^(sha256:[a-f0-9]{64}|sha384:[a-f0-9]{96}|sha512:[a-f0-9]{128})$/;
/** Compressed chunks in flight to a worker. */
const WINDOW = 4;

/**
 * A worker left idle this long is ended, so that its isolate and what it kept of its last layers (heap
 * and buffers an idle thread never collects) go back to the system; a pull's layers follow each other
 * closer than this and reuse their workers (issue 17).
 */
const WORKER_IDLE_MS = 3000;

interface PoolWorker {
  worker: Worker;
  busy: boolean;
  idle?: NodeJS.Timeout;
}

/**
 * The worker's compiled file, from the package root (not this file's directory: in the snapshots
 * process's bundle this code runs from dist/services/snapshots/main.js); the build bundles it too.
 */
const APPLY_WORKER = path.join(repoRoot(), "dist", "services", "snapshots", "src", "local", "diff", "apply-worker.js");

class ApplyPool {
  private readonly workers: PoolWorker[] = [];
  private readonly waiting: ((w: PoolWorker) => void)[] = [];
  private nextId = 1;
  private closed = false;

  constructor(private readonly size: number, private readonly log?: Logger) {}

  private spawn(): PoolWorker {
    const w: PoolWorker = { worker: new Worker(APPLY_WORKER), busy: false };
    w.worker.unref();
    w.worker.on("error", (err) => this.log?.error({ err }, "apply worker failed"));
    w.worker.on("exit", () => {
      const i = this.workers.indexOf(w);
      if (i >= 0) this.workers.splice(i, 1);
    });
    this.workers.push(w);
    return w;
  }

  private acquire(): Promise<PoolWorker> {
    const free = this.workers.find((w) => !w.busy);
    if (free) {
      clearTimeout(free.idle);
      free.busy = true;
      return Promise.resolve(free);
    }
    if (this.workers.length < this.size) {
      const w = this.spawn();
      w.busy = true;
      return Promise.resolve(w);
    }
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  private release(w: PoolWorker): void {
    const next = this.waiting.shift();
    if (next) {
      next(w);
      return;
    }
    w.busy = false;
    w.idle = setTimeout(() => {
      if (w.busy) return;
      const i = this.workers.indexOf(w);
      if (i >= 0) this.workers.splice(i, 1);
      void w.worker.terminate();
    }, WORKER_IDLE_MS);
    w.idle.unref();
  }

  /**
   * Apply `job` with the layer's bytes from `data`: a stream, or a local file the worker reads itself
   * (then `fileDigest`, when given, is the file's digest computed here in parallel: the worker waits
   * for its verdict instead of hashing the compressed bytes itself). A failure in `mismatched` says the
   * bytes did not match the descriptor (nothing was applied).
   */
  async run(job: ApplyJob, data: AsyncIterable<Buffer> | { file: string; fileDigest?: Promise<string> }, signal: AbortSignal): Promise<{ digest: string; size: number }> {
    const w = await this.acquire();
    const id = this.nextId++;
    const post = (m: ToWorker, transfer?: ArrayBuffer[]): void => w.worker.postMessage(m, transfer);
    let credit = WINDOW;
    let wake: (() => void) | undefined;
    let result: { digest: string; size: number } | undefined;
    let failure: Error | undefined;
    /** The digest of an inflated layer the worker shared with us (see FromWorker "inflated"). */
    let inflatedDigest: Promise<string> | undefined;
    let settle: () => void = () => undefined;
    const settled = new Promise<void>((r) => (settle = r));
    const onMessage = (m: FromWorker): void => {
      if (m.id !== id) return;
      if (m.type === "ack") credit++;
      else if (m.type === "inflated") {
        inflatedDigest = digestInSlices(Buffer.from(m.buffer, 0, m.size));
        inflatedDigest.catch(() => undefined);
      } else if (m.type === "staged") {
        const fileDigest = "file" in data ? data.fileDigest : undefined;
        if (!fileDigest) post({ type: "verdict", id, ok: false, message: "no digest to check the layer against" });
        else {
          fileDigest.then(
            (d) => post({ type: "verdict", id, ok: d === job.expectedDigest, message: `layer digest mismatch: got ${d}, expected ${job.expectedDigest}` }),
            (e: unknown) => post({ type: "verdict", id, ok: false, message: `layer digest not computed: ${(e as Error).message}` }),
          );
        }
      } else if (m.type === "done") {
        result = { digest: m.digest, size: m.size };
        settle();
      } else {
        failure = new FlotillaError(m.code === "invalid argument" ? ErrorCodes.InvalidArgument : m.code === "context canceled" ? ErrorCodes.Canceled : ErrorCodes.Internal, m.message);
        if (m.mismatch) mismatched.add(failure);
        settle();
      }
      wake?.();
    };
    const onExit = (): void => {
      failure = errInternal("apply worker exited");
      settle();
      wake?.();
    };
    w.worker.on("message", onMessage);
    w.worker.on("exit", onExit);
    const onAbort = (): void => post({ type: "abort", id, reason: "canceled" });
    signal.addEventListener("abort", onAbort, { once: true });
    try {
      post({ type: "start", id, job });
      if ("file" in data) {
        post({ type: "file", id, path: data.file });
        await settled;
        // The worker's shared memory is ours until this returns: wait for the hash either way.
        const digest = await inflatedDigest;
        if (failure) throw failure;
        return digest ? { ...result!, digest } : result!;
      }
      try {
        for await (const chunk of data) {
          while (credit <= 0 && !result && !failure) await new Promise<void>((r) => (wake = r));
          if (result || failure) break;
          credit--;
          const copy = new Uint8Array(chunk.length);
          copy.set(chunk);
          post({ type: "chunk", id, data: copy }, [copy.buffer]);
        }
      } catch (e) {
        post({ type: "abort", id, reason: (e as Error).message });
        await settled;
        throw e;
      }
      if (!result && !failure) post({ type: "end", id });
      await settled;
      if (failure) throw failure;
      return result!;
    } finally {
      signal.removeEventListener("abort", onAbort);
      w.worker.off("message", onMessage);
      w.worker.off("exit", onExit);
      if (this.closed) void w.worker.terminate();
      else this.release(w);
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const w of this.workers) clearTimeout(w.idle);
    await Promise.all(this.workers.filter((w) => !w.busy).map((w) => w.worker.terminate()));
  }
}

/** sha256 of `data`, a MiB per event-loop turn so the loop keeps serving while it hashes. */
async function digestInSlices(data: Buffer): Promise<string> {
  const h = createHash("sha256");
  for (let off = 0; off < data.length; off += 1 << 20) {
    h.update(data.subarray(off, Math.min(off + (1 << 20), data.length)));
    if (off + (1 << 20) < data.length) await new Promise<void>((r) => setImmediate(r));
  }
  return `sha256:${h.digest("hex")}`;
}

/** The digest of a file's bytes, read in chunks so the event loop keeps serving while it hashes. */
export async function digestOfFile(file: string, algo: string): Promise<string> {
  const fh = await fs.promises.open(file, "r");
  try {
    const h = createHash(algo);
    const buf = Buffer.allocUnsafe(1 << 20);
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, null);
      if (bytesRead === 0) break;
      h.update(buf.subarray(0, bytesRead));
    }
    return `${algo}:${h.digest("hex")}`;
  } finally {
    await fh.close();
  }
}

/** Where to apply, for a mount list: a directory we can write directly, or undefined (mount first). */
export function directTarget(mounts: Mount[]): ApplyTarget | undefined {
  if (mounts.length !== 1) return undefined;
  const m = mounts[0]!;
  if (m.type === "overlay") {
    let upper = "";
    let lowers: string[] = [];
    for (const o of m.options) {
      if (o.startsWith("upperdir=")) upper = o.slice("upperdir=".length);
      else if (o.startsWith("lowerdir=")) lowers = o.slice("lowerdir=".length).split(":");
    }
    if (!upper || !path.isAbsolute(upper) || lowers.some((l) => !path.isAbsolute(l))) return undefined;
    return { root: upper, lowers, overlay: true };
  }
  if ((m.type === "bind" || m.options.includes("bind") || m.options.includes("rbind")) && path.isAbsolute(m.source)) {
    return { root: m.source, lowers: [], overlay: false };
  }
  return undefined;
}

export class LocalDiffer implements Applier, Comparer {
  private readonly pool: ApplyPool;

  constructor(private readonly content: LayerContent, private readonly cfg: DifferConfig, private readonly log?: Logger) {
    this.pool = new ApplyPool(cfg.workers, log);
  }

  async apply(ctx: CallContext, desc: Descriptor, mounts: Mount[], opts: ApplyOptions = {}): Promise<Descriptor> {
    if (layerCompression(desc.mediaType) === undefined) throw errNotImplemented(`unsupported layer media type ${JSON.stringify(desc.mediaType)}`);
    if (!DIGEST_RE.test(desc.digest)) throw errInvalidArgument(`invalid layer digest ${JSON.stringify(desc.digest)}`);
    if (mounts.length === 0) throw errInvalidArgument("no mounts to apply the layer to");
    if (isReadOnly(mounts)) throw errInvalidArgument("cannot apply a layer to a read-only mount");
    const run = async (target: ApplyTarget): Promise<Descriptor> => {
      if (ctx.signal.aborted) throw errCanceled("apply canceled");
      const job: ApplyJob = {
        target,
        allowDevices: this.cfg.allowDevices,
        maxUncompressedBytes: this.cfg.maxUncompressedBytes,
        expectedDigest: desc.digest,
        expectedSize: desc.size,
        syncFs: !!opts.syncFs,
      };
      const file = await this.content.localFile?.(ctx, desc.digest);
      let r: { digest: string; size: number } | undefined;
      if (file) {
        // The compressed digest is computed here while the worker decompresses and stages the layer.
        const fileDigest = digestOfFile(file, desc.digest.split(":")[0]!);
        fileDigest.catch(() => undefined);
        try {
          r = await this.pool.run({ ...job, digestElsewhere: true }, { file, fileDigest }, ctx.signal);
        } catch (e) {
          // A refusal stands only if the file really holds the layer (else the file is stale or foreign).
          if (ctx.signal.aborted || (!mismatched.has(e as Error) && (await fileDigest.catch(() => "")) === desc.digest)) throw e;
          this.log?.warn({ digest: desc.digest, file, err: e }, "local blob file does not match its descriptor; streaming it from the content service");
        }
      }
      r ??= await this.pool.run(job, this.content.read(ctx, desc.digest), ctx.signal);
      return { mediaType: LayerMediaTypes.OciTar, digest: r.digest, size: r.size };
    };
    const direct = directTarget(mounts);
    if (direct) return run(direct);
    return withTempMount(this.cfg.tmpDir, mounts, (dir) => run({ root: dir, lowers: [], overlay: false }));
  }

  async compare(ctx: CallContext, lower: Mount[], upper: Mount[], opts: DiffOptions = {}): Promise<Descriptor> {
    const mediaType = opts.mediaType || LayerMediaTypes.OciTarGzip;
    const compression = layerCompression(mediaType);
    if (compression === undefined || compression === "zstd") throw errNotImplemented(`unsupported diff media type ${JSON.stringify(mediaType)}`);
    const ro = (ms: Mount[]): Mount[] => ms.map((m) => ({ ...m, options: [...m.options.filter((o) => o !== "rw"), "ro"] }));
    const withSide = <T>(ms: Mount[], fn: (dir: string) => Promise<T>): Promise<T> => {
      if (ms.length === 0) return withTempMount(this.cfg.tmpDir, [], fn);
      return withTempMount(this.cfg.tmpDir, ro(ms), fn);
    };
    return withSide(lower, (ldir) => withSide(upper, async (udir) => {
      const writer = await this.content.writer(ctx, opts.ref || uniqueRef("diff"));
      try {
        const uHash = createHash("sha256");
        const cHash = createHash("sha256");
        let cSize = 0;
        let writeChain = Promise.resolve();
        let writeErr: unknown;
        const toContent = (b: Buffer): void => {
          cHash.update(b);
          cSize += b.length;
          writeChain = writeChain.then(() => writer.write(b)).catch((e) => {
            writeErr ??= e;
          });
        };
        const gz = compression === "gzip" ? zlib.createGzip() : undefined;
        gz?.on("data", toContent);
        const gzEnded = gz ? new Promise<void>((r, j) => { gz.on("end", r); gz.on("error", j); }) : Promise.resolve();
        await writeDiff(ldir, udir, async (chunk) => {
          if (writeErr) throw writeErr;
          uHash.update(chunk);
          if (gz) {
            if (!gz.write(chunk)) await new Promise((r) => gz.once("drain", r));
            await writeChain;
          } else {
            toContent(chunk);
            await writeChain;
          }
        }, { sourceDateEpoch: opts.sourceDateEpoch ? Math.floor(opts.sourceDateEpoch.getTime() / 1000) : undefined });
        gz?.end();
        await gzEnded;
        await writeChain;
        if (writeErr) throw writeErr;
        const digest = `sha256:${cHash.digest("hex")}`;
        const diffId = `sha256:${uHash.digest("hex")}`;
        await writer.commit(cSize, digest, { ...(opts.labels ?? {}), [LABEL_UNCOMPRESSED]: diffId });
        return { mediaType, digest, size: cSize };
      } catch (e) {
        await writer.abort();
        throw e;
      }
    }));
  }

  async close(): Promise<void> {
    await this.pool.close();
  }
}
