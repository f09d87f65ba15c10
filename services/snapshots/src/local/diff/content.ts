/**
 * What the differ needs from the content service: stream a blob out, write a new blob in. Spoken
 * straight over the containerd Content wire protocol (Read stream, Write bidi), so this process does
 * not depend on the content service's code.
 */
import { randomBytes } from "node:crypto";
import type { CallContext } from "../../../../../libs/context";
import { errInternal, isAlreadyExists } from "../../../../../libs/errdefs";
import { RpcClient } from "../../../../../libs/grpc/client";

export const CONTENT_SERVICE = "containerd.services.content.v1.Content";
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
}

export function uniqueRef(prefix: string): string {
  return `${prefix}-${Date.now()}-${randomBytes(4).toString("hex")}`;
}

export class RemoteContent implements LayerContent {
  private readonly rpc: RpcClient;

  constructor(address: string) {
    this.rpc = new RpcClient(address, CONTENT_SERVICE);
  }

  async *read(ctx: CallContext, digest: string): AsyncIterable<Buffer> {
    for await (const m of this.rpc.serverStream(ctx, "Read", { digest, offset: 0, size: 0 })) {
      const d = m.data as Buffer | undefined;
      if (d && d.length) yield d;
    }
  }

  async writer(ctx: CallContext, ref: string): Promise<BlobWriter> {
    const call = this.rpc.bidi(ctx, "Write");
    const it = call.responses[Symbol.asyncIterator]();
    const next = async (): Promise<Record<string, unknown>> => {
      const r = await it.next();
      if (r.done) throw errInternal("content Write stream ended early");
      return r.value;
    };
    await call.send({ action: 0, ref });
    const st = await next();
    let offset = Number(st.offset ?? 0);
    if (offset !== 0) {
      call.cancel();
      await this.rpc.unary(ctx, "Abort", { ref }).catch(() => undefined);
      return this.writer(ctx, ref);
    }
    let done = false;
    return {
      write: async (data: Buffer) => {
        for (let i = 0; i < data.length; i += WRITE_CHUNK) {
          const part = data.subarray(i, i + WRITE_CHUNK);
          await call.send({ action: 1, offset, data: part });
          await next();
          offset += part.length;
        }
      },
      commit: async (size, digest, labels) => {
        try {
          await call.send({ action: 2, total: size, expected: digest, offset, labels });
          await next();
        } catch (e) {
          if (!isAlreadyExists(e)) throw e;
        } finally {
          done = true;
          call.end();
        }
      },
      abort: async () => {
        if (done) return;
        done = true;
        call.cancel();
        await this.rpc.unary(ctx, "Abort", { ref }).catch(() => undefined);
      },
    };
  }
}
