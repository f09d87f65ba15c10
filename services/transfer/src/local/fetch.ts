/**
 * Writing registry blobs into the content store. One download per digest at a time across every
 * transfer in this process: a second pull wanting a blob that is being fetched waits, then finds it
 * committed (AlreadyExists in the same namespace, a data-less shared commit in another). An ingest
 * left by an earlier, interrupted transfer is resumed from its offset with a Range request.
 */
import type { CallContext } from "#libs/context";
import type { ContentStore, ContentWriter } from "#libs/core/content";
import { MAX_CHUNK } from "#libs/core/content";
import { causeText, errFailedPrecondition, isAlreadyExists, isFailedPrecondition, isUnavailable } from "#libs/errdefs";
import type { OciDescriptor } from "#libs/oci";
import { verify, type RegistryClient } from "#libs/registry";
import { sleep } from "#libs/registry/http";
import type { Lane } from "./lanes";

export interface FetchResult {
  /** "fetched": committed by this call in the call's namespace; "exists": it was there already. */
  status: "fetched" | "exists";
  /** The whole blob, when it was at most `keep` bytes and all of it came through this call. */
  data?: Buffer;
  /** Whether the blob was committed with the labels of `opts.labels` (only when "fetched"). */
  labelled: boolean;
}

export interface FetchOptions {
  ref: string;
  onBytes?: (offset: number) => void;
  signal?: AbortSignal;
  /** Keep the bytes of a blob up to this size and hand them back (manifests and configs, read next). */
  keep?: number;
  /**
   * Labels to commit the blob with, spared a later Info and Update; `data` is the whole blob when it
   * was kept. Must not throw.
   */
  labels?: (data: Buffer | undefined) => Record<string, string>;
  /** Where this download stands among the others of its pull (see lanes.ts); each chunk is written in its turn. */
  lane?: Lane;
  /**
   * Called with a kept blob's bytes once they are all in and match the digest, before the commit
   * (which may wait on the disk): a config can be read that much earlier. Must not throw.
   */
  onVerified?: (data: Buffer) => void;
}

/** Open the ingest `ref`, waiting while another writer holds it (containerd's OpenWriter retry). */
export async function openWriter(content: ContentStore, ctx: CallContext, desc: OciDescriptor, ref: string, signal?: AbortSignal): Promise<ContentWriter | undefined> {
  for (let wait = 50; ; wait = Math.min(wait * 2, 2000)) {
    try {
      return await content.writer(ctx, { ref, total: desc.size, expected: desc.digest });
    } catch (e) {
      if (isAlreadyExists(e)) return undefined;
      if (!isUnavailable(e) || signal?.aborted) throw e;
      await sleep(wait, signal);
    }
  }
}

const EXISTS: FetchResult = { status: "exists", labelled: false };

export class BlobFetcher {
  private readonly inflight = new Map<string, Promise<unknown>>();

  constructor(private readonly content: ContentStore) {}

  /** Make `desc` present in the call's namespace, downloading it with `client` if needed. */
  async fetch(ctx: CallContext, client: RegistryClient, desc: OciDescriptor, opts: FetchOptions): Promise<FetchResult> {
    for (;;) {
      const other = this.inflight.get(desc.digest);
      if (!other) break;
      await other.catch(() => undefined);
    }
    const p = this.write(ctx, client, desc, opts);
    this.inflight.set(desc.digest, p);
    try {
      return await p;
    } finally {
      if (this.inflight.get(desc.digest) === p) this.inflight.delete(desc.digest);
    }
  }

  private async write(ctx: CallContext, client: RegistryClient, desc: OciDescriptor, opts: FetchOptions): Promise<FetchResult> {
    const w = await openWriter(this.content, ctx, desc, opts.ref, opts.signal);
    if (!w) return EXISTS;
    let committing = false;
    try {
      let offset = (await w.status()).offset;
      if (desc.size > 0 && offset === desc.size) {
        // Shared content (already in another namespace) or a finished ingest: commit without data.
        committing = true;
        await w.commit(desc.size, desc.digest, opts.labels?.(undefined));
        return { status: "fetched", labelled: !!opts.labels };
      }
      if (offset > desc.size) {
        await w.truncate(0);
        offset = 0;
      }
      opts.onBytes?.(offset);
      // One staging buffer per download, reused for every chunk: the writer has encoded the data by
      // the time write() resolves, and reusing it spares the garbage collector a MiB per MiB fetched.
      // A blob kept whole is staged in one buffer of its size, written as it fills and handed back.
      const keep = offset === 0 && desc.size > 0 && desc.size <= (opts.keep ?? 0);
      const whole = keep ? Buffer.allocUnsafe(desc.size) : undefined;
      let stage = whole ? whole.subarray(0, Math.min(MAX_CHUNK, desc.size)) : Buffer.allocUnsafe(Math.min(MAX_CHUNK, Math.max(desc.size - offset, 1)));
      let used = 0;
      const flush = async (): Promise<void> => {
        if (!used) return;
        const chunk = stage.subarray(0, used);
        offset = await (opts.lane ? opts.lane.turn(() => w.write(chunk)) : w.write(chunk));
        used = 0;
        opts.onBytes?.(offset);
        if (whole) stage = whole.subarray(offset, Math.min(offset + MAX_CHUNK, desc.size));
      };
      for await (const c of client.chunks(desc, offset, opts.signal)) {
        let chunk = c;
        while (chunk.length) {
          const n = chunk.copy(stage, used);
          used += n;
          chunk = chunk.subarray(n);
          if (used === stage.length) {
            // A blob longer than its descriptor says: the commit refuses it (size mismatch).
            if (whole && offset + used >= desc.size && chunk.length) {
              committing = true;
              throw errFailedPrecondition(`unexpected size: more than ${desc.size} bytes`);
            }
            await flush();
          }
        }
      }
      await flush();
      const data = whole && offset === desc.size ? whole : undefined;
      if (data && opts.onVerified) {
        try {
          verify(desc, data);
          opts.onVerified(data);
        } catch {
          /* not the blob: the commit below refuses it */
        }
      }
      committing = true;
      await w.commit(desc.size, desc.digest, opts.labels?.(data));
      return { status: "fetched", data, labelled: !!opts.labels };
    } catch (e) {
      if (isAlreadyExists(e)) return EXISTS;
      await w.close().catch(() => undefined);
      if (committing && isFailedPrecondition(e)) {
        // Wrong size or digest: drop the bad bytes so the next try starts clean.
        await this.content.abort(ctx, opts.ref).catch(() => undefined);
        throw errFailedPrecondition(`failed commit on ref "${opts.ref}": ${causeText(e)}`, { cause: e });
      }
      throw e;
    }
  }
}
