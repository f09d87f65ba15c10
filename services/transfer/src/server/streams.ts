/**
 * containerd.services.streaming.v1.Streaming: side-channel streams for Transfer. The first message is
 * `StreamInit{id}`; the stream is registered under (namespace of the call, id), acknowledged with an
 * `Empty`, and kept until its consumer closes it (the RPC then ends OK) or the client goes away.
 * Streams nobody claims within `unclaimedMs` are closed, so an abandoned client leaks nothing.
 */
import type { CallContext } from "#libs/context";
import { namespaceRequired } from "#libs/context";
import { errAlreadyExists, errCanceled, errInvalidArgument, errNotFound } from "#libs/errdefs";
import { serviceHandlers, type Send, type ServiceHandlers } from "#libs/grpc/server";
import type { Decoded, Input } from "#libs/proto/types";
import { decode } from "#libs/proto";
import { StreamTypeUrls, type StreamManager, type StreamMessage, type TransferStream } from "#libs/core/transfer";

export const STREAMING_SERVICE = "containerd.services.streaming.v1.Streaming";

/** A registered stream, backed by one Streaming.Stream call. Single reader; sends honour backpressure. */
export class CallStream implements TransferStream {
  private readonly ac = new AbortController();
  private readonly finished: Promise<void>;
  private finish!: () => void;
  private reading: Promise<unknown> = Promise.resolve();
  private eof = false;
  claimed = false;

  constructor(private readonly it: AsyncIterator<Decoded["google.protobuf.Any"]>, private readonly sendFn: Send<Input["google.protobuf.Any"]>, callSignal: AbortSignal) {
    this.finished = new Promise((r) => (this.finish = r));
    const onAbort = (): void => {
      this.ac.abort(errCanceled("stream closed by the client"));
      this.finish();
    };
    if (callSignal.aborted) onAbort();
    else callSignal.addEventListener("abort", onAbort, { once: true });
  }

  get signal(): AbortSignal {
    return this.ac.signal;
  }

  /** Resolves when the stream is done (closed here, or the client went away). */
  done(): Promise<void> {
    return this.finished;
  }

  async send(msg: StreamMessage): Promise<void> {
    if (this.ac.signal.aborted) throw errCanceled("stream is closed");
    await this.sendFn({ type_url: msg.typeUrl, value: Buffer.from(msg.value.buffer, msg.value.byteOffset, msg.value.byteLength) });
  }

  recv(): Promise<StreamMessage | undefined> {
    const next = this.reading.then(async () => {
      if (this.eof || this.ac.signal.aborted) return undefined;
      const r = await this.it.next();
      if (r.done) {
        this.eof = true;
        return undefined;
      }
      return { typeUrl: String(r.value.type_url ?? ""), value: r.value.value as Buffer };
    });
    this.reading = next.catch(() => undefined);
    return next;
  }

  async close(): Promise<void> {
    if (!this.ac.signal.aborted) this.ac.abort(errCanceled("stream closed"));
    this.finish();
  }
}

export class LocalStreamManager implements StreamManager {
  private readonly streams = new Map<string, TransferStream>();

  constructor(private readonly unclaimedMs = 60_000) {}

  private key(ctx: CallContext, id: string): string {
    return `${namespaceRequired(ctx)}\u0000${id}`;
  }

  register(ctx: CallContext, id: string, stream: TransferStream): void {
    const k = this.key(ctx, id);
    if (this.streams.has(k)) throw errAlreadyExists(`stream ${JSON.stringify(id)}`);
    this.streams.set(k, stream);
    const forget = (): void => {
      if (this.streams.get(k) === stream) this.streams.delete(k);
    };
    stream.signal.addEventListener("abort", forget, { once: true });
    if (stream instanceof CallStream) {
      const t = setTimeout(() => {
        if (!stream.claimed) void stream.close();
      }, this.unclaimedMs);
      t.unref();
      stream.signal.addEventListener("abort", () => clearTimeout(t), { once: true });
    }
  }

  get(ctx: CallContext, id: string): TransferStream {
    const s = this.streams.get(this.key(ctx, id));
    if (!s) throw errNotFound(`stream ${JSON.stringify(id)}`);
    if (s instanceof CallStream) s.claimed = true;
    return s;
  }

  get size(): number {
    return this.streams.size;
  }
}

export function streamingHandlers(manager: LocalStreamManager): ServiceHandlers<typeof STREAMING_SERVICE> {
  return serviceHandlers(STREAMING_SERVICE, {
    Stream: async (ctx, reqs, send) => {
      const it = reqs[Symbol.asyncIterator]();
      const first = await it.next();
      if (first.done) return;
      if (String(first.value.type_url).replace(/^.*\//, "") !== StreamTypeUrls.StreamInit) {
        throw errInvalidArgument(`first message must be ${StreamTypeUrls.StreamInit}, got ${JSON.stringify(first.value.type_url)}`);
      }
      const init = decode<{ id: string }>(StreamTypeUrls.StreamInit, first.value.value as Buffer);
      if (!init.id) throw errInvalidArgument("stream id must not be empty");
      const stream = new CallStream(it, send, ctx.signal);
      manager.register(ctx, init.id, stream);
      await send({ type_url: StreamTypeUrls.Empty, value: Buffer.alloc(0) });
      await stream.done();
    },
  });
}
