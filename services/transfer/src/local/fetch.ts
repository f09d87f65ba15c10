/**
 * Writing registry blobs into the content store. One download per digest at a time across every
 * transfer in this process: a second pull wanting a blob that is being fetched waits, then finds it
 * committed (AlreadyExists in the same namespace, a data-less shared commit in another). An ingest
 * left by an earlier, interrupted transfer is resumed from its offset with a Range request.
 */
import type { CallContext } from "../../../../libs/context";
import type { ContentStore, ContentWriter } from "../../../../libs/core/content";
import { MAX_CHUNK } from "../../../../libs/core/content";
import { causeText, errFailedPrecondition, isAlreadyExists, isFailedPrecondition, isUnavailable } from "../../../../libs/errdefs";
import type { OciDescriptor } from "../../../../libs/oci";
import type { RegistryClient } from "../../../../libs/registry";
import { sleep } from "../../../../libs/registry/http";

export type FetchResult = "fetched" | "exists";

export interface FetchOptions {
  ref: string;
  onBytes?: (offset: number) => void;
  signal?: AbortSignal;
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
    if (!w) return "exists";
    let committing = false;
    try {
      let offset = (await w.status()).offset;
      if (desc.size > 0 && offset === desc.size) {
        // Shared content (already in another namespace) or a finished ingest: commit without data.
        committing = true;
        await w.commit(desc.size, desc.digest);
        return "fetched";
      }
      if (offset > desc.size) {
        await w.truncate(0);
        offset = 0;
      }
      opts.onBytes?.(offset);
      // One staging buffer per download, reused for every chunk: the writer has encoded the data by
      // the time write() resolves, and reusing it spares the garbage collector a MiB per MiB fetched.
      const stage = Buffer.allocUnsafe(Math.min(MAX_CHUNK, Math.max(desc.size - offset, 1)));
      let used = 0;
      const flush = async (): Promise<void> => {
        if (!used) return;
        offset = await w.write(stage.subarray(0, used));
        used = 0;
        opts.onBytes?.(offset);
      };
      for await (const c of client.fetch(desc, offset, opts.signal)) {
        let chunk = c as Buffer;
        while (chunk.length) {
          const n = chunk.copy(stage, used);
          used += n;
          chunk = chunk.subarray(n);
          if (used === stage.length) await flush();
        }
      }
      await flush();
      committing = true;
      await w.commit(desc.size, desc.digest);
      return "fetched";
    } catch (e) {
      if (isAlreadyExists(e)) return "exists";
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
