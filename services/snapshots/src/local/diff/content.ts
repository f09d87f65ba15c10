/**
 * What the differ needs from the content service: stream a blob out, write a new blob in, through the
 * content client (libs/clients/content: a Read stream, a Write session), so this process does not
 * depend on the content service's code.
 *
 * Co-located fast path: when the content service's blob directory is visible from this process (same
 * host or a shared volume, as `flotilla up` and the compose file set it up), a layer is read straight
 * from its file instead of being streamed over gRPC. The content service still decides visibility
 * (an Info call in the caller's namespace comes first, so a blob of another namespace stays NotFound),
 * the file must have the size Info reports, and the differ verifies the digest of what it read,
 * falling back to the gRPC stream when the file does not match.
 */
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import type { CallContext } from "#libs/context";
import { isAlreadyExists } from "#libs/errdefs";
import { ContentStoreProxy } from "#libs/clients/content";
import type { Channel } from "#libs/grpc/client";
/** Largest data chunk in one Write request. */
const WRITE_CHUNK = 1 << 20;

export interface BlobWriter {
  write(data: Buffer): Promise<void>;
  /** Commit with the expected size and digest; an existing blob (AlreadyExists) counts as success. */
  commit(size: number, digest: string, labels: Record<string, string>): Promise<void>;
  abort(): Promise<void>;
}

export interface LayerContent {
  /** The blob's bytes in order. NotFound when it is not in the namespace. */
  read(ctx: CallContext, digest: string): AsyncIterable<Buffer>;
  /** A writer for a new blob under `ref`. */
  writer(ctx: CallContext, ref: string): Promise<BlobWriter>;
  /**
   * A local file that should hold the blob's bytes (the caller verifies them), or undefined when the
   * blob has to be streamed with `read`. NotFound when the blob is not in the namespace.
   */
  localFile?(ctx: CallContext, digest: string): Promise<string | undefined>;
}

const DIGEST_PARTS = /^(sha256|sha384|sha512):([a-f0-9]+)$/;

/** Where a content store rooted at `root` keeps a committed blob (containerd's `blobs/<algo>/<hex>`). */
export function blobFile(root: string, digest: string): string | undefined {
  const m = DIGEST_PARTS.exec(digest);
  return m ? path.join(root, "blobs", m[1]!, m[2]!) : undefined;
}

export function uniqueRef(prefix: string): string {
  return `${prefix}-${Date.now()}-${randomBytes(4).toString("hex")}`;
}

export class RemoteContent implements LayerContent {
  private readonly store: ContentStoreProxy;

  /** `localRoot`: the content service's root directory, when its blob files may be readable here. */
  constructor(channel: Channel, private readonly localRoot?: string) {
    this.store = new ContentStoreProxy(channel);
  }

  async localFile(ctx: CallContext, digest: string): Promise<string | undefined> {
    if (!this.localRoot) return undefined;
    const file = blobFile(this.localRoot, digest);
    if (!file) return undefined;
    const { size } = await this.store.info(ctx, digest);
    try {
      const st = fs.statSync(file);
      return st.isFile() && st.size === size ? file : undefined;
    } catch {
      return undefined;
    }
  }

  read(ctx: CallContext, digest: string): AsyncIterable<Buffer> {
    return this.store.read(ctx, digest);
  }

  async writer(ctx: CallContext, ref: string): Promise<BlobWriter> {
    const w = await this.store.writer(ctx, { ref });
    if ((await w.status()).offset !== 0) {
      // A leftover ingest under this ref: start it over.
      await w.close();
      await this.store.abort(ctx, ref).catch(() => undefined);
      return this.writer(ctx, ref);
    }
    let done = false;
    return {
      write: async (data: Buffer) => {
        for (let i = 0; i < data.length; i += WRITE_CHUNK) await w.write(data.subarray(i, i + WRITE_CHUNK));
      },
      commit: async (size, digest, labels) => {
        done = true;
        try {
          await w.commit(size, digest, labels);
        } catch (e) {
          if (!isAlreadyExists(e)) throw e;
        }
      },
      abort: async () => {
        if (done) return;
        done = true;
        await w.close();
        await this.store.abort(ctx, ref).catch(() => undefined);
      },
    };
  }
}
