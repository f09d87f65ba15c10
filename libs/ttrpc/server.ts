/**
 * A ttrpc server: services registered by full proto name, handlers on raw payload bytes. It enforces
 * the protocol's stream rules (odd, increasing client stream ids; Data only on live streams; 4 MiB
 * frames), answers unknown services and methods with Unimplemented, honours `timeout_nano`, and maps
 * handler errors to statuses with containerd's codes (libs/ttrpc/errors.ts).
 */
import * as fs from "node:fs";
import * as net from "node:net";
import * as path from "node:path";
import { classError, statusFromError } from "./errors";
import { NAMESPACE_KEY } from "./client";
import { MessageQueue } from "./queue";
import {
  Code,
  decodeRequest,
  encodeFrame,
  encodeResponse,
  Flags,
  FrameReader,
  MAX_MESSAGE_LENGTH,
  MessageType,
  socketPath,
  type Frame,
  type Metadata,
  type Status,
} from "./wire";

export interface ServerCallContext {
  service: string;
  method: string;
  metadata: Metadata;
  /** Aborted when the deadline passes or the connection closes. */
  signal: AbortSignal;
  /** Epoch ms, when the client sent a deadline. */
  deadline?: number;
  /** `containerd-namespace-ttrpc`, if sent. */
  namespace?: string;
}

export type UnaryHandler = (ctx: ServerCallContext, payload: Buffer) => Promise<Uint8Array>;

export interface ServerStream {
  /** Messages from the client until it half-closes (empty for a server-streaming call). */
  messages: AsyncIterable<Buffer>;
  send(payload: Uint8Array): void;
}

/** A streaming handler; what it returns is the final message (client-streaming) or nothing. */
export type StreamHandler = (ctx: ServerCallContext, stream: ServerStream, first: Buffer) => Promise<Uint8Array | void>;

export interface StreamMethod {
  handler: StreamHandler;
  serverStreaming: boolean;
  clientStreaming: boolean;
}

export interface ServiceDesc {
  methods?: Record<string, UnaryHandler>;
  streams?: Record<string, StreamMethod>;
}

export interface TtrpcServerOptions {
  onError?: (err: unknown, where: string) => void;
  /** A connection was accepted / closed; `open` counts the connections left. */
  onConnect?: (open: number) => void;
  onDisconnect?: (open: number) => void;
  /** Runs each call's handler (e.g. inside a trace span, see libs/tracing/ttrpc); the handler runs bare without it. */
  wrap?: CallWrapper;
}

export type CallWrapper = <T>(ctx: ServerCallContext, run: () => Promise<T>) => Promise<T>;

class Connection {
  private readonly reader = new FrameReader();
  private lastStreamId = 0;
  private readonly streams = new Map<number, MessageQueue<Buffer>>();
  private readonly ac = new AbortController();
  private closed = false;

  constructor(private readonly server: TtrpcServer, readonly socket: net.Socket) {
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    socket.on("error", () => undefined);
    socket.on("close", () => {
      this.closed = true;
      this.ac.abort();
      for (const q of this.streams.values()) q.end();
      this.streams.clear();
      server.forget(this);
    });
  }

  private write(id: number, type: number, flags: number, data?: Uint8Array): void {
    if (!this.closed) this.socket.write(encodeFrame(id, type, flags, data));
  }

  private respond(id: number, payload: Uint8Array, status?: Status): void {
    this.write(id, MessageType.Response, 0, encodeResponse({ payload: Buffer.from(payload), status }));
  }

  private fail(id: number, code: number, message: string): void {
    this.respond(id, Buffer.alloc(0), { code, message, details: [] });
  }

  private onData(chunk: Buffer): void {
    for (const r of this.reader.push(chunk)) {
      if (r.kind === "oversize") {
        this.fail(r.streamId, Code.ResourceExhausted, `message length ${r.length} exceed maximum message size of ${MAX_MESSAGE_LENGTH}`);
        continue;
      }
      this.onFrame(r.frame);
    }
  }

  private onFrame(f: Frame): void {
    if (f.type === MessageType.Data) {
      const q = this.streams.get(f.streamId);
      if (!q) {
        this.fail(f.streamId, Code.InvalidArgument, "StreamID is no longer active");
        return;
      }
      if (!(f.flags & Flags.NoData)) q.push(f.data);
      if (f.flags & Flags.RemoteClosed) q.end();
      return;
    }
    if (f.type !== MessageType.Request) return; // ignore unknown frame types
    if (f.streamId % 2 === 0) {
      this.fail(f.streamId, Code.InvalidArgument, "StreamID must be odd for client initiated streams");
      return;
    }
    if (f.streamId <= this.lastStreamId) {
      this.fail(f.streamId, Code.InvalidArgument, "StreamID cannot be re-used and must increment");
      return;
    }
    this.lastStreamId = f.streamId;
    let req;
    try {
      req = decodeRequest(f.data);
    } catch (e) {
      this.fail(f.streamId, Code.InvalidArgument, `ttrpc: malformed request: ${(e as Error).message}`);
      return;
    }
    const svc = this.server.service(req.service);
    if (!svc) {
      this.fail(f.streamId, Code.Unimplemented, `service ${req.service}`);
      return;
    }
    const unary = svc.methods?.[req.method];
    const streaming = svc.streams?.[req.method];
    if (!unary && !streaming) {
      this.fail(f.streamId, Code.Unimplemented, `method ${req.method}`);
      return;
    }
    const signals = [this.ac.signal];
    let deadline: number | undefined;
    if (req.timeoutNano > 0) {
      deadline = Date.now() + req.timeoutNano / 1e6;
      signals.push(AbortSignal.timeout(Math.max(1, Math.ceil(req.timeoutNano / 1e6))));
    }
    const ctx: ServerCallContext = {
      service: req.service,
      method: req.method,
      metadata: req.metadata,
      signal: signals.length === 1 ? signals[0]! : AbortSignal.any(signals),
      deadline,
      namespace: req.metadata[NAMESPACE_KEY]?.[0],
    };
    const id = f.streamId;
    const wrap = this.server.wrap;
    if (unary) {
      (wrap ? wrap(ctx, () => unary(ctx, req.payload)) : unary(ctx, req.payload)).then(
        (res) => this.respond(id, res),
        (err) => this.respond(id, Buffer.alloc(0), this.server.statusOf(err, `${req.service}/${req.method}`)),
      );
      return;
    }
    const m = streaming!;
    const q = new MessageQueue<Buffer>();
    if (f.flags & Flags.RemoteOpen) this.streams.set(id, q);
    else q.end();
    const stream: ServerStream = {
      messages: q,
      send: (p) => this.write(id, MessageType.Data, 0, p),
    };
    (wrap ? wrap(ctx, () => m.handler(ctx, stream, req.payload)) : m.handler(ctx, stream, req.payload)).then(
      (final) => {
        this.streams.delete(id);
        if (m.serverStreaming) this.write(id, MessageType.Data, final ? Flags.RemoteClosed : Flags.RemoteClosed | Flags.NoData, final ?? undefined);
        else this.respond(id, final ?? Buffer.alloc(0));
      },
      (err) => {
        this.streams.delete(id);
        this.respond(id, Buffer.alloc(0), this.server.statusOf(err, `${req.service}/${req.method}`));
      },
    );
  }
}

export class TtrpcServer {
  private readonly services = new Map<string, ServiceDesc>();
  private readonly conns = new Set<Connection>();
  private readonly listeners: net.Server[] = [];

  constructor(private readonly opts: TtrpcServerOptions = {}) {}

  get wrap(): CallWrapper | undefined {
    return this.opts.wrap;
  }

  register(name: string, desc: ServiceDesc): void {
    if (this.services.has(name)) throw new Error(`ttrpc service ${name} registered twice`);
    this.services.set(name, desc);
  }

  /** @internal */
  service(name: string): ServiceDesc | undefined {
    return this.services.get(name);
  }

  /** @internal */
  statusOf(err: unknown, where: string): Status {
    const s = statusFromError(err);
    if (s.code === Code.Unknown || s.code === Code.Internal) this.opts.onError?.(err, where);
    return s;
  }

  /** @internal */
  forget(c: Connection): void {
    if (this.conns.delete(c)) this.opts.onDisconnect?.(this.conns.size);
  }

  /** Serve connections accepted by `listener`. */
  serve(listener: net.Server): void {
    this.listeners.push(listener);
    listener.on("connection", (s: net.Socket) => this.accept(s));
  }

  /** Serve one already-connected socket. */
  accept(socket: net.Socket): void {
    this.conns.add(new Connection(this, socket));
    this.opts.onConnect?.(this.conns.size);
  }

  /**
   * Listen on a unix socket address (a stale socket file is replaced; the file is made 0600, the
   * equivalent of upstream's same-uid peer-credential check for a root daemon).
   */
  async listen(address: string): Promise<net.Server> {
    const p = socketPath(address);
    if (!p.startsWith("\0")) {
      fs.mkdirSync(path.dirname(p), { recursive: true, mode: 0o711 });
      try {
        fs.unlinkSync(p);
      } catch {
        /* not there */
      }
    }
    const l = net.createServer();
    await new Promise<void>((resolve, reject) => {
      l.once("error", reject);
      l.listen(p, () => {
        l.removeListener("error", reject);
        resolve();
      });
    });
    if (!p.startsWith("\0")) fs.chmodSync(p, 0o600);
    this.serve(l);
    return l;
  }

  /** Connections currently open. */
  get connections(): number {
    return this.conns.size;
  }

  /** Stop accepting, close every connection. */
  async close(): Promise<void> {
    const closing = this.listeners.splice(0).map((l) => new Promise<void>((r) => l.close(() => r())));
    for (const c of this.conns) c.socket.destroy();
    this.conns.clear();
    await Promise.all(closing);
  }
}

/** Re-exported for handlers that want to throw a classed error. */
export { classError };
