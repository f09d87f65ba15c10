/**
 * ContentStore over gRPC (containerd.services.content.v1.Content): callers cannot tell it from the local
 * store. Errors arrive as native errdefs classes (the RpcClient maps them). The content process's lease
 * records are reached with LeaseResourceHolderProxy (libs/clients/leases).
 */
import type { CallContext } from "../context";
import { errFailedPrecondition, errInvalidArgument } from "../errdefs";
import { RpcClient, type BidiCall, type Channel } from "../grpc/client";
import type { Msg } from "../grpc/server";
import type { ClientRequest, ClientResponse } from "../proto/types";
import { fromTimestamp } from "../proto";
import type {
  ContentInfo,
  ContentReaderAt,
  ContentStore,
  ContentWriter,
  IngestStatus,
  WriterOptions,
} from "../core/content";

export const CONTENT_SERVICE = "containerd.services.content.v1.Content";

const STAT = 0;
const WRITE = 1;
const COMMIT = 2;

/** A wire `containerd.services.content.v1.Info` as a ContentInfo (also the server adapter's decoding). */
export function infoFromProto(m: Msg | null | undefined): ContentInfo {
  return {
    digest: String(m?.digest ?? ""),
    size: Number(m?.size ?? 0),
    createdAt: fromTimestamp(m?.created_at) ?? new Date(0),
    updatedAt: fromTimestamp(m?.updated_at) ?? new Date(0),
    labels: (m?.labels as Record<string, string> | undefined) ?? {},
  };
}

function statusFromProto(m: Msg | null | undefined): IngestStatus {
  return {
    ref: String(m?.ref ?? ""),
    offset: Number(m?.offset ?? 0),
    total: Number(m?.total ?? 0),
    expected: String(m?.expected ?? ""),
    startedAt: fromTimestamp(m?.started_at) ?? new Date(0),
    updatedAt: fromTimestamp(m?.updated_at) ?? new Date(0),
  };
}

class RemoteReaderAt implements ContentReaderAt {
  constructor(private readonly rpc: RpcClient<typeof CONTENT_SERVICE>, private readonly ctx: CallContext, private readonly digest: string, readonly size: number) {}

  /** One Read call per window, as containerd's proxy does. */
  async readAt(buf: Uint8Array, position: number): Promise<number> {
    if (position >= this.size || buf.length === 0) return 0;
    const want = Math.min(buf.length, this.size - position);
    let n = 0;
    for await (const m of this.rpc.serverStream(this.ctx, "Read", { digest: this.digest, offset: position, size: want })) {
      const data = m.data as Buffer;
      const k = Math.min(data.length, want - n);
      buf.set(data.subarray(0, k), n);
      n += k;
      if (n >= want) break;
    }
    return n;
  }

  async close(): Promise<void> {}
}

type WriteRequest = ClientRequest<typeof CONTENT_SERVICE, "Write">;
type WriteResponse = ClientResponse<typeof CONTENT_SERVICE, "Write">;

class RemoteWriter implements ContentWriter {
  private readonly responses: AsyncIterator<WriteResponse>;
  private offset = 0;
  private dgst = "";
  private closed = false;
  /** Offsets the server should answer for the writes sent but not yet acknowledged, oldest first. */
  private readonly unacked: number[] = [];
  private opening?: WriteResponse;

  /** `window`: writes that may be in flight before write() waits for the oldest acknowledgement. */
  constructor(private readonly call: BidiCall<WriteRequest, WriteResponse>, readonly ref: string, private readonly window = 1) {
    this.responses = call.responses[Symbol.asyncIterator]();
  }

  private async next(): Promise<WriteResponse> {
    const r = await this.responses.next();
    if (r.done) throw errFailedPrecondition(`write stream for ref ${JSON.stringify(this.ref)} ended early`);
    if (r.value.digest) this.dgst = String(r.value.digest);
    return r.value;
  }

  /** Read acknowledgements until at most `n` writes are unacknowledged; a short write fails here. */
  private async settle(n: number): Promise<void> {
    while (this.unacked.length > n) {
      const want = this.unacked[0]!;
      const r = await this.next();
      this.unacked.shift();
      const got = Number(r.offset ?? 0);
      if (got < want) {
        this.unacked.length = 0;
        this.offset = got;
        throw errFailedPrecondition(`short write: server is at ${got}, expected ${want}`);
      }
    }
  }

  /** One request, one response (the protocol is synchronous, as in containerd's remote writer). */
  async roundTrip(req: WriteRequest): Promise<WriteResponse> {
    if (this.closed) throw errFailedPrecondition(`writer for ref ${JSON.stringify(this.ref)} is closed`);
    if (req.action !== STAT) this.opening = undefined;
    await this.settle(0);
    const sent = this.call.send(req);
    const next = this.next();
    // A failed send shows up as the stream's error on the response side.
    sent.catch(() => undefined);
    try {
      return await next;
    } catch (e) {
      await sent;
      throw e;
    }
  }

  async status(): Promise<IngestStatus> {
    // Nothing written since the opening STAT, whose answer stands: the ref is locked to this writer.
    if (this.opening) return this.statusOf(this.opening);
    return this.statusOf(await this.roundTrip({ action: STAT }));
  }

  private statusOf(r: WriteResponse): IngestStatus {
    this.offset = Number(r.offset ?? 0);
    return {
      ref: this.ref,
      offset: this.offset,
      total: Number(r.total ?? 0),
      expected: "",
      startedAt: fromTimestamp(r.started_at) ?? new Date(0),
      updatedAt: fromTimestamp(r.updated_at) ?? new Date(0),
    };
  }

  /** The digest the service last reported: with a write window, call status() first to cover every write. */
  digest(): string {
    return this.dgst;
  }

  /** The opening STAT's answer: where writing continues, and status() until anything is written. */
  opened(r: WriteResponse): void {
    this.offset = Number(r.offset ?? 0);
    this.opening = r;
  }

  async write(data: Uint8Array): Promise<number> {
    if (this.window > 1) return this.writeAhead(data);
    const r = await this.roundTrip({ action: WRITE, offset: this.offset, data: Buffer.from(data.buffer, data.byteOffset, data.byteLength) });
    const next = Number(r.offset ?? 0);
    if (next - this.offset < data.length) {
      const wrote = next - this.offset;
      this.offset = next;
      throw errFailedPrecondition(`short write: ${wrote} of ${data.length} bytes`);
    }
    this.offset = next;
    return next;
  }

  /**
   * Send a write without waiting for its acknowledgement (up to `window` in flight; the server handles
   * a stream's requests in order). The data has been encoded when this resolves; a failure of an
   * earlier write surfaces here or at the next status or commit.
   */
  private async writeAhead(data: Uint8Array): Promise<number> {
    if (this.closed) throw errFailedPrecondition(`writer for ref ${JSON.stringify(this.ref)} is closed`);
    await this.settle(this.window - 1);
    this.opening = undefined;
    const at = this.offset;
    this.offset += data.length;
    this.unacked.push(this.offset);
    try {
      await this.call.send({ action: WRITE, offset: at, data: Buffer.from(data.buffer, data.byteOffset, data.byteLength) });
    } catch (e) {
      // The stream failed: its status (from the response side) says why.
      await this.settle(0);
      throw e;
    }
    return this.offset;
  }

  async truncate(size: number): Promise<void> {
    if (size !== 0) throw errInvalidArgument("Truncate: unsupported size");
    // Validated by the server on the next write, as containerd's remote writer does.
    await this.settle(0);
    this.opening = undefined;
    this.offset = 0;
  }

  async commit(size: number, expected: string, labels?: Record<string, string>): Promise<void> {
    try {
      const r = await this.roundTrip({ action: COMMIT, total: size, offset: this.offset, expected, labels: labels ?? {} });
      const off = Number(r.offset ?? 0);
      if (size !== 0 && off !== size) throw errFailedPrecondition(`unexpected size: ${off} != ${size}`);
      if (expected && r.digest !== expected) throw errFailedPrecondition(`unexpected digest: ${String(r.digest)} != ${expected}`);
      this.offset = off;
    } finally {
      await this.close();
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // Writes in flight land before the session ends, so the ingest's progress is theirs when this resolves.
    await this.settle(0).catch(() => undefined);
    this.call.end();
    // Let the server finish the call; its trailing copy of the last response is ignored.
    void (async () => {
      for (;;) {
        const r = await this.responses.next();
        if (r.done) return;
      }
    })().catch(() => undefined);
  }
}

export interface ContentProxyOptions {
  /**
   * Writes a writer may have in flight before it waits for their acknowledgements (default 1: one
   * request, one response, as containerd's remote writer). More overlaps sending with the server's
   * hashing and writing, for callers that write big blobs.
   */
  writeWindow?: number;
}

export class ContentStoreProxy implements ContentStore {
  private readonly rpc: RpcClient<typeof CONTENT_SERVICE>;

  constructor(channel: Channel, private readonly opts: ContentProxyOptions = {}) {
    this.rpc = new RpcClient(channel, CONTENT_SERVICE);
  }

  /** Resolve once the owning process answers (a connection is up), or reject after `ms`. */
  waitForReady(ms: number): Promise<void> {
    return this.rpc.waitForReady(ms);
  }

  async info(ctx: CallContext, digest: string): Promise<ContentInfo> {
    return infoFromProto((await this.rpc.unary(ctx, "Info", { digest })).info);
  }

  async update(ctx: CallContext, info: Pick<ContentInfo, "digest" | "labels">, paths: readonly string[]): Promise<ContentInfo> {
    const req = { info: { digest: info.digest, labels: info.labels }, update_mask: paths.length ? { paths: [...paths] } : null };
    return infoFromProto((await this.rpc.unary(ctx, "Update", req)).info);
  }

  async walk(ctx: CallContext, fn: (info: ContentInfo) => void | Promise<void>, filters?: readonly string[]): Promise<void> {
    for await (const m of this.rpc.serverStream(ctx, "List", { filters: [...(filters ?? [])] })) {
      for (const i of (m.info as Msg[] | undefined) ?? []) await fn(infoFromProto(i));
    }
  }

  async delete(ctx: CallContext, digest: string): Promise<void> {
    await this.rpc.unary(ctx, "Delete", { digest });
  }

  /**
   * The blob's bytes from `offset` (`size` 0: to the end) in one Read stream, chunk by chunk as the
   * service sends them: for a caller that consumes a whole blob in order (readerAt asks per window).
   */
  async *read(ctx: CallContext, digest: string, offset = 0, size = 0): AsyncIterable<Buffer> {
    for await (const m of this.rpc.serverStream(ctx, "Read", { digest, offset, size })) {
      const d = m.data as Buffer | undefined;
      if (d && d.length) yield d;
    }
  }

  async readerAt(ctx: CallContext, digest: string): Promise<ContentReaderAt> {
    const info = await this.info(ctx, digest);
    return new RemoteReaderAt(this.rpc, ctx, digest, info.size);
  }

  async status(ctx: CallContext, ref: string): Promise<IngestStatus> {
    return statusFromProto((await this.rpc.unary(ctx, "Status", { ref })).status);
  }

  async listStatuses(ctx: CallContext, filters?: readonly string[]): Promise<IngestStatus[]> {
    return (((await this.rpc.unary(ctx, "ListStatuses", { filters: [...(filters ?? [])] })).statuses as Msg[] | undefined) ?? []).map(statusFromProto);
  }

  async abort(ctx: CallContext, ref: string): Promise<void> {
    await this.rpc.unary(ctx, "Abort", { ref });
  }

  async writer(ctx: CallContext, opts: WriterOptions): Promise<ContentWriter> {
    if (!opts.ref) throw errInvalidArgument("ref must not be empty");
    const w = new RemoteWriter(this.rpc.bidi(ctx, "Write"), opts.ref, Math.max(1, this.opts.writeWindow ?? 1));
    try {
      w.opened(await w.roundTrip({ action: STAT, ref: opts.ref, total: opts.total ?? 0, expected: opts.expected ?? "" }));
    } catch (e) {
      await w.close();
      throw e;
    }
    return w;
  }
}
