/**
 * A ttrpc client over one unix socket: unary calls and streams multiplexed by odd stream ids,
 * responses matched by id (they may come back in any order), deadlines sent as `timeout_nano`, and a
 * close hook that fires once when the connection ends for any reason (the runtime manager's dead-shim
 * detection hangs off it).
 */
import * as net from "node:net";
import { classError, closedError, errorFromStatus } from "./errors";
import { MessageQueue } from "./queue";
import {
  decodeResponse,
  encodeFrame,
  encodeRequest,
  Flags,
  FrameReader,
  MAX_MESSAGE_LENGTH,
  MessageType,
  socketPath,
  type Frame,
  type Metadata,
} from "./wire";

export const NAMESPACE_KEY = "containerd-namespace-ttrpc";

/**
 * What every outgoing request's metadata passes through (set by libs/tracing in a process that exports
 * spans: the caller's trace context goes along, as containerd's ttrpc interceptors send it). None by
 * default, so a process that does not trace loads nothing for it.
 */
let outgoing: ((md: Metadata) => Metadata) | undefined;

export function setOutgoingMetadata(fn: ((md: Metadata) => Metadata) | undefined): void {
  outgoing = fn;
}

export interface CallOptions {
  /** Deadline for the call; sent to the server as `timeout_nano`. */
  timeoutMs?: number;
  metadata?: Metadata;
  signal?: AbortSignal;
}

export interface ConnectOptions {
  /** Keep retrying refused/missing sockets until this many ms have passed (default: fail at once). */
  retryMs?: number;
  onClose?: () => void;
}

interface Pending {
  resolve: (payload: Buffer) => void;
  reject: (err: Error) => void;
  stream?: ClientStreamImpl;
}

export interface ClientStream {
  send(payload: Uint8Array): void;
  /** Half-close: no more messages from this side. */
  closeSend(): void;
  /** Messages from the server until it ends the stream (errors reject the iteration). */
  [Symbol.asyncIterator](): AsyncIterator<Buffer>;
}

class ClientStreamImpl extends MessageQueue<Buffer> implements ClientStream {
  constructor(private readonly client: TtrpcClient, readonly id: number) {
    super();
  }

  send(payload: Uint8Array): void {
    this.client.writeFrame(this.id, MessageType.Data, 0, payload);
  }

  closeSend(): void {
    this.client.writeFrame(this.id, MessageType.Data, Flags.RemoteClosed | Flags.NoData);
  }
}

async function dial(path: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.createConnection(path);
    s.once("connect", () => {
      s.removeListener("error", reject);
      resolve(s);
    });
    s.once("error", reject);
  });
}

export class TtrpcClient {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly reader = new FrameReader();
  private isClosed = false;
  private readonly closeHooks: (() => void)[] = [];
  /** Resolves when the connection has ended and the close hooks have run. */
  readonly closed: Promise<void>;
  private markClosed!: () => void;

  constructor(private readonly socket: net.Socket, onClose?: () => void) {
    this.closed = new Promise((r) => (this.markClosed = r));
    if (onClose) this.closeHooks.push(onClose);
    socket.setNoDelay?.(true);
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    socket.on("error", () => undefined);
    socket.on("close", () => this.teardown());
  }

  /** Connect to `unix:///path`, a plain path, or an abstract name. */
  static async connect(address: string, opts: ConnectOptions = {}): Promise<TtrpcClient> {
    const path = socketPath(address);
    const until = Date.now() + (opts.retryMs ?? 0);
    for (let delay = 5; ; delay = Math.min(delay * 2, 100)) {
      try {
        return new TtrpcClient(await dial(path), opts.onClose);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (Date.now() >= until || (code !== "ENOENT" && code !== "ECONNREFUSED" && code !== "EAGAIN")) {
          throw classError("unavailable", `ttrpc: dial ${address}: ${(e as Error).message}`);
        }
        await new Promise((r) => setTimeout(r, delay));
      }
    }
  }

  get isOpen(): boolean {
    return !this.isClosed;
  }

  /** Run `fn` once the connection is gone (immediately if it already is). */
  onClose(fn: () => void): void {
    if (this.isClosed) fn();
    else this.closeHooks.push(fn);
  }

  /** Unary call: one request, one response payload. */
  call(service: string, method: string, payload: Uint8Array, opts: CallOptions = {}): Promise<Buffer> {
    if (this.isClosed) return Promise.reject(closedError());
    const id = this.allocId();
    const req = encodeRequest({
      service,
      method,
      payload: Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength),
      timeoutNano: opts.timeoutMs ? Math.round(opts.timeoutMs * 1e6) : 0,
      metadata: outgoing ? outgoing(opts.metadata ?? {}) : (opts.metadata ?? {}),
    });
    if (req.length > MAX_MESSAGE_LENGTH) {
      return Promise.reject(classError("resource exhausted", `message length ${req.length} exceed maximum message size of ${MAX_MESSAGE_LENGTH}`));
    }
    return new Promise<Buffer>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const finish = (): void => {
        if (timer) clearTimeout(timer);
        opts.signal?.removeEventListener("abort", onAbort);
        this.pending.delete(id);
      };
      const onAbort = (): void => {
        finish();
        reject(classError("context canceled", `${service}/${method}`));
      };
      this.pending.set(id, {
        resolve: (p) => {
          finish();
          resolve(p);
        },
        reject: (e) => {
          finish();
          reject(e);
        },
      });
      if (opts.timeoutMs) {
        timer = setTimeout(() => {
          finish();
          reject(classError("context deadline exceeded", `${service}/${method}`));
        }, opts.timeoutMs);
      }
      if (opts.signal) {
        if (opts.signal.aborted) return onAbort();
        opts.signal.addEventListener("abort", onAbort, { once: true });
      }
      this.writeFrame(id, MessageType.Request, 0, req);
    });
  }

  /**
   * Open a stream. For a server-streaming call pass the request as `first`; a client-streaming call
   * sends its messages with `send` (the opening request carries no payload).
   */
  stream(service: string, method: string, kind: { clientStreaming: boolean }, first?: Uint8Array, metadata: Metadata = {}): ClientStream {
    const id = this.allocId();
    const s = new ClientStreamImpl(this, id);
    if (this.isClosed) {
      s.end(closedError());
      return s;
    }
    this.pending.set(id, {
      resolve: () => s.end(),
      reject: (e) => s.end(e),
      stream: s,
    });
    const req = encodeRequest({ service, method, payload: Buffer.from(first ?? []), timeoutNano: 0, metadata: outgoing ? outgoing(metadata) : metadata });
    this.writeFrame(id, MessageType.Request, kind.clientStreaming ? Flags.RemoteOpen : Flags.RemoteClosed, req);
    return s;
  }

  close(): void {
    if (this.isClosed) return;
    this.socket.destroy();
    this.teardown();
  }

  /** @internal */
  writeFrame(id: number, type: number, flags: number, data?: Uint8Array): void {
    if (this.isClosed) return;
    this.socket.write(encodeFrame(id, type, flags, data));
  }

  private allocId(): number {
    const id = this.nextId;
    this.nextId += 2;
    if (this.nextId > 0xffffffff) this.nextId = 1;
    return id;
  }

  private onData(chunk: Buffer): void {
    for (const r of this.reader.push(chunk)) {
      if (r.kind === "oversize") {
        this.pending.get(r.streamId)?.reject(classError("resource exhausted", `message length ${r.length} exceed maximum message size of ${MAX_MESSAGE_LENGTH}`));
        continue;
      }
      this.onFrame(r.frame);
    }
  }

  private onFrame(f: Frame): void {
    const p = this.pending.get(f.streamId);
    if (!p) return;
    if (f.type === MessageType.Response) {
      let res;
      try {
        res = decodeResponse(f.data);
      } catch (e) {
        p.reject(classError("internal", `ttrpc: bad response: ${(e as Error).message}`));
        return;
      }
      if (res.status && res.status.code !== 0) p.reject(errorFromStatus(res.status));
      else {
        if (p.stream && res.payload.length) p.stream.push(res.payload);
        p.resolve(res.payload);
      }
      this.pending.delete(f.streamId);
      return;
    }
    if (f.type === MessageType.Data && p.stream) {
      if (!(f.flags & Flags.NoData)) p.stream.push(f.data);
      if (f.flags & Flags.RemoteClosed) {
        p.stream.end();
        this.pending.delete(f.streamId);
      }
    }
  }

  private teardown(): void {
    if (this.isClosed) return;
    this.isClosed = true;
    for (const p of this.pending.values()) p.reject(closedError());
    this.pending.clear();
    for (const h of this.closeHooks.splice(0)) {
      try {
        h();
      } catch {
        /* a hook's failure is its own */
      }
    }
    this.markClosed();
  }
}
