/**
 * The client side every proxy uses: encodes plain objects with our protos, carries namespace, lease,
 * deadline and trace context, and maps gRPC statuses back to native errors (the one place for that).
 *
 * It speaks gRPC on Node's HTTP/2 client directly (a general gRPC library costs about three times the
 * CPU per call): one HTTP/2 session per target, opened on first use and replaced when the server sends
 * GOAWAY or the connection drops. A call made while the server is down fails at once with Unavailable
 * (as a gRPC channel without wait-for-ready does); a stream the server refused before it started
 * (REFUSED_STREAM, e.g. during its graceful shutdown) is retried once on a fresh session.
 */
import * as http2 from "node:http2";
import { propagation, trace } from "@opentelemetry/api";
import { LEASE_HEADER, NAMESPACE_HEADER, type CallContext } from "../context";
import { fromGrpc } from "../errdefs";
import { grpcTarget } from "../config";
import { DECODE_OPTIONS, lookupService, type Type } from "../proto";
import { SpanKind, SpanStatusCode, tracer, type Span } from "../tracing";
import { encodeFrame, MAX_MESSAGE, type Msg } from "./server";
import type { ClientRequest, ClientResponse, KnownService, MethodOfKind } from "../proto/types";
import type { TlsMaterial } from "./tls";
import { connectHttp2, FrameReader, FramingError, GRPC_CONTENT_TYPE, writeWithDrain } from "./wire";
import { Status } from "./status";

/** Receive windows (connection and stream), as on our servers. */
const WINDOW = 16 << 20;
/** A connection that is not up after this long fails its calls with Unavailable. */
const CONNECT_TIMEOUT_MS = 20000;
const { NGHTTP2_CANCEL, NGHTTP2_REFUSED_STREAM, NGHTTP2_NO_ERROR } = http2.constants;

/**
 * A gRPC status as an error (what errdefs' fromGrpc maps to a native class, keeping this one as its
 * `cause`). `statusDetails` holds the server's `grpc-status-details-bin` (an encoded google.rpc.Status)
 * when it sent one.
 */
export class StatusError extends Error {
  constructor(readonly code: number, readonly details: string, readonly statusDetails?: Buffer) {
    super(`${code} ${Status[code] ?? "UNKNOWN"}: ${details}`);
  }
}

interface MethodTypes {
  req: Type;
  res: Type;
  path: string;
}

/** A bidirectional call: requests `Req` out, responses `Res` in. */
export interface BidiCall<Req, Res> {
  send(m: Req): Promise<void>;
  end(): void;
  cancel(): void;
  responses: AsyncIterable<Res>;
}

/** The gRPC status an HTTP status other than 200 means. */
function statusOfHttp(code: number): number {
  switch (code) {
    case 400: return Status.INTERNAL;
    case 401: return Status.UNAUTHENTICATED;
    case 403: return Status.PERMISSION_DENIED;
    case 404: return Status.UNIMPLEMENTED;
    case 429: case 502: case 503: case 504: return Status.UNAVAILABLE;
    default: return Status.UNKNOWN;
  }
}

/** The gRPC status a stream reset by the server means. */
function statusOfReset(code: number): number {
  if (code === NGHTTP2_CANCEL) return Status.CANCELLED;
  if (code === NGHTTP2_REFUSED_STREAM) return Status.UNAVAILABLE;
  return Status.INTERNAL;
}

function decodeMessage(v: string | string[] | undefined): string {
  const s = Array.isArray(v) ? v[0] ?? "" : v ?? "";
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/** `grpc-timeout` for `ms` milliseconds (at most 8 digits, as the protocol allows). */
export function grpcTimeout(ms: number): string {
  const m = Math.max(1, Math.ceil(ms));
  if (m < 1e8) return `${m}m`;
  const s = Math.ceil(m / 1000);
  if (s < 1e8) return `${s}S`;
  return `${Math.min(99999999, Math.ceil(s / 3600))}H`;
}

/** One target address: at most one live HTTP/2 session, made on demand (get one from a ChannelPool). */
export class Channel {
  private session: http2.ClientHttp2Session | undefined;
  private readonly active = new Map<http2.ClientHttp2Session, number>();

  /** With `tls`, a TCP target is dialled with TLS, presenting that certificate. */
  constructor(readonly target: string, private readonly tls?: TlsMaterial) {}

  /** The live session, connecting if there is none. */
  get(): http2.ClientHttp2Session {
    const cur = this.session;
    if (cur && !cur.closed && !cur.destroyed) return cur;
    const s = connectHttp2(this.target, WINDOW, this.tls);
    const drop = (): void => {
      if (this.session === s) this.session = undefined;
    };
    const timer = setTimeout(() => s.destroy(new Error(`connection to ${this.target} timed out`)), CONNECT_TIMEOUT_MS);
    timer.unref();
    s.once("connect", () => {
      clearTimeout(timer);
      try {
        s.setLocalWindowSize(WINDOW);
      } catch {
        /* closing */
      }
    });
    s.on("goaway", drop);
    s.on("close", () => {
      clearTimeout(timer);
      this.active.delete(s);
      drop();
    });
    s.on("error", drop); // each stream sees the failure itself
    s.unref();
    this.session = s;
    return s;
  }

  /** A call starts: its session keeps the process alive while calls are in flight on it. */
  hold(s: http2.ClientHttp2Session): void {
    const n = this.active.get(s) ?? 0;
    this.active.set(s, n + 1);
    if (n === 0) s.ref();
  }

  release(s: http2.ClientHttp2Session): void {
    const n = (this.active.get(s) ?? 1) - 1;
    if (n > 0) return void this.active.set(s, n);
    this.active.delete(s);
    if (!s.destroyed) s.unref();
  }

  /** Resolve once a session is connected, or reject after `ms`. */
  async waitForReady(ms: number): Promise<void> {
    const until = Date.now() + ms;
    for (;;) {
      const s = this.get();
      const err = await new Promise<Error | undefined>((resolve) => {
        if (!s.connecting && !s.destroyed && !s.closed) return resolve(undefined);
        const left = Math.max(0, until - Date.now());
        const t = setTimeout(() => finish(new Error(`connection to ${this.target} not ready after ${ms} ms`)), left);
        const finish = (e?: Error): void => {
          clearTimeout(t);
          s.off("connect", onConnect);
          s.off("close", onClose);
          resolve(e);
        };
        const onConnect = (): void => finish();
        const onClose = (): void => finish(new Error(`connection to ${this.target} failed`));
        s.once("connect", onConnect);
        s.once("close", onClose);
      });
      if (!err) return;
      if (Date.now() >= until) throw err;
      await new Promise((r) => setTimeout(r, Math.min(100, Math.max(0, until - Date.now()))));
    }
  }

  /** Let calls in flight finish, then close; the next call connects again. */
  close(): void {
    const s = this.session;
    this.session = undefined;
    if (s && !s.destroyed) s.close();
  }
}

/**
 * The channels of one owner (a service process's context, a command, a test): one per target address,
 * shared by every client made with it, so that the clients of a process to one address share one
 * HTTP/2 connection.
 */
export class ChannelPool {
  private readonly channels = new Map<string, Channel>();

  /** With `tls` (this process's certificate and the CA), every TCP peer is dialled with mutual TLS; unix sockets stay plain. */
  constructor(readonly tls?: TlsMaterial) {}

  /** The channel to `address` (any form grpcTarget takes), made on first use. */
  get(address: string): Channel {
    const target = grpcTarget(address);
    let c = this.channels.get(target);
    if (!c) this.channels.set(target, (c = new Channel(target, this.tls)));
    return c;
  }

  /** Close every channel (calls in flight finish; a client used again reconnects). */
  close(): void {
    for (const c of this.channels.values()) c.close();
  }
}

/**
 * One call on the wire: the request goes out through `write`/`end`, response messages are queued
 * (the stream pauses while too many wait), and `status` settles with the call's final status.
 */
class Call {
  private stream: http2.ClientHttp2Stream | undefined;
  private session: http2.ClientHttp2Session | undefined;
  private readonly reader = new FrameReader(MAX_MESSAGE);
  private readonly queue: Buffer[] = [];
  private wake: (() => void) | undefined;
  private headersSeen = false;
  private received = false;
  private retried = false;
  private trailerStatus: StatusError | null | undefined;
  private endPending: Buffer | undefined;
  private timer: NodeJS.Timeout | undefined;
  /** The final status: undefined while the call runs. */
  result: StatusError | null | undefined;
  private onDone: ((err: StatusError | null) => void) | undefined;

  constructor(
    private readonly channel: Channel,
    private readonly headers: http2.OutgoingHttpHeaders,
    private readonly ctx: CallContext,
    private readonly span: Span,
    private readonly canRetry: boolean,
  ) {}

  /** Start the call; `first` (when given) is the whole request, sent with the end of the stream. */
  start(first?: Buffer): void {
    const ctx = this.ctx;
    if (ctx.signal.aborted) return this.settle(new StatusError(Status.CANCELLED, "Cancelled on client"));
    if (ctx.deadline) {
      const left = ctx.deadline.getTime() - Date.now();
      if (left <= 0) return this.settle(new StatusError(Status.DEADLINE_EXCEEDED, "Deadline exceeded"));
      this.headers["grpc-timeout"] = grpcTimeout(left);
      this.timer = setTimeout(() => this.cancelWith(new StatusError(Status.DEADLINE_EXCEEDED, "Deadline exceeded")), Math.min(left, 2 ** 31 - 1));
    }
    ctx.signal.addEventListener("abort", this.onAbort);
    this.endPending = first;
    this.open();
  }

  private open(): void {
    let s: http2.ClientHttp2Session;
    let st: http2.ClientHttp2Stream;
    try {
      s = this.channel.get();
      st = s.request(this.headers, { endStream: false });
    } catch (e) {
      // A session that just received GOAWAY: one more try on a new one.
      if (!this.retried) {
        this.retried = true;
        return this.open();
      }
      return this.settle(new StatusError(Status.UNAVAILABLE, `connection error: ${(e as Error).message}`));
    }
    this.session = s;
    this.stream = st;
    this.channel.hold(s);
    for (const [event, fn] of this.listeners()) st.on(event, fn);
    if (this.endPending) st.end(this.endPending);
  }

  private readonly onAbort = (): void => this.cancelWith(new StatusError(Status.CANCELLED, "Cancelled on client"));

  /** End the call from this side: the server sees a reset (CANCEL). */
  cancelWith(err: StatusError): void {
    const st = this.stream;
    this.settle(err);
    // Also after the server's trailers: a stream this side never ended stays half-open (and keeps its
    // session, and so the process, alive) until it is reset.
    if (st && !st.closed && !st.destroyed) st.close(NGHTTP2_CANCEL);
  }

  private readonly onResponse = (h: http2.IncomingHttpHeaders & http2.IncomingHttpStatusHeader, flags: number): void => {
    this.headersSeen = true;
    const http = Number(h[":status"] ?? 200);
    if (http !== 200) return this.cancelWith(new StatusError(statusOfHttp(http), `Received HTTP status code ${http}`));
    // Trailers-only: the status is in these headers.
    if (h["grpc-status"] !== undefined || (flags & http2.constants.NGHTTP2_FLAG_END_STREAM) !== 0) this.onTrailers(h);
  };

  /** The status the server sent; the call settles with it once every message before it is read. */
  private readonly onTrailers = (t: http2.IncomingHttpHeaders): void => {
    if (this.trailerStatus !== undefined) return;
    const code = t["grpc-status"] === undefined ? Status.UNKNOWN : Number(t["grpc-status"]);
    if (code === Status.OK) {
      this.trailerStatus = null;
      return;
    }
    const bin = t["grpc-status-details-bin"];
    this.trailerStatus = new StatusError(
      Number.isInteger(code) ? code : Status.UNKNOWN,
      t["grpc-status"] === undefined ? "no grpc-status in the response" : decodeMessage(t["grpc-message"]),
      typeof bin === "string" ? Buffer.from(bin, "base64") : undefined,
    );
  };

  private readonly onEnd = (): void => {
    if (this.result !== undefined) return;
    if (this.reader.partial) return this.settle(new StatusError(Status.INTERNAL, "response ended inside a message"));
    if (this.trailerStatus !== undefined) this.settle(this.trailerStatus);
  };

  private readonly onData = (chunk: Buffer): void => {
    if (this.result !== undefined && this.result !== null) return;
    this.received = true;
    try {
      const msgs = this.reader.push(chunk);
      for (let i = 0; i < msgs.length; i++) this.queue.push(msgs[i]!);
    } catch (e) {
      const code = e instanceof FramingError ? (e.grpcCode === Status.RESOURCE_EXHAUSTED ? Status.RESOURCE_EXHAUSTED : Status.INTERNAL) : Status.INTERNAL;
      return this.cancelWith(new StatusError(code, (e as Error).message));
    }
    if (this.queue.length >= 16) this.stream?.pause();
    this.notify();
  };

  private readonly onError = (e: Error & { code?: string }): void => {
    if (this.result !== undefined) return;
    const st = this.stream!;
    // Refused before anything happened (the server is going away): once more, on a new session.
    if (this.canRetry && !this.retried && !this.headersSeen && !this.received && st.rstCode === NGHTTP2_REFUSED_STREAM) return this.retry();
    if (e.code === "ERR_HTTP2_STREAM_ERROR" && st.rstCode !== undefined) return this.settle(new StatusError(statusOfReset(st.rstCode), `Received RST_STREAM with code ${st.rstCode}`));
    this.settle(new StatusError(Status.UNAVAILABLE, `connection error: ${e.message}`));
  };

  private readonly onClose = (): void => {
    const st = this.stream!;
    if (this.session) {
      this.channel.release(this.session);
      this.session = undefined;
    }
    if (this.result !== undefined) return;
    if (this.trailerStatus !== undefined) return this.settle(this.trailerStatus);
    const rst = st.rstCode;
    if (this.canRetry && !this.retried && !this.headersSeen && !this.received && rst === NGHTTP2_REFUSED_STREAM) return this.retry();
    if (rst !== undefined && rst !== NGHTTP2_NO_ERROR) return this.settle(new StatusError(statusOfReset(rst), `Received RST_STREAM with code ${rst}`));
    if (!this.headersSeen) return this.settle(new StatusError(Status.UNAVAILABLE, "connection closed before the server answered"));
    this.settle(new StatusError(Status.INTERNAL, "server closed the stream without sending trailers"));
  };

  /** The stream events this call listens to, and its handlers. */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- the listener type of Node's EventEmitter.on
  private listeners(): [string, (...args: any[]) => void][] {
    return [["response", this.onResponse], ["trailers", this.onTrailers], ["data", this.onData], ["end", this.onEnd], ["error", this.onError], ["close", this.onClose]];
  }

  private retry(): void {
    this.retried = true;
    const st = this.stream;
    if (st) {
      for (const [event, fn] of this.listeners()) st.off(event, fn);
      st.on("error", () => undefined);
      if (this.session) {
        this.channel.release(this.session);
        this.session = undefined;
      }
    }
    this.open();
  }

  private settle(err: StatusError | null): void {
    if (this.result !== undefined) return;
    this.result = err;
    if (this.timer) clearTimeout(this.timer);
    this.ctx.signal.removeEventListener("abort", this.onAbort);
    this.span.setAttribute("rpc.grpc.status_code", err ? err.code : Status.OK);
    if (err) {
      this.span.setStatus({ code: SpanStatusCode.ERROR, message: err.details });
    }
    this.span.end();
    this.notify();
    this.onDone?.(err);
  }

  private notify(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }

  /** Resolve with the final status (null for OK). */
  done(cb: (err: StatusError | null) => void): void {
    if (this.result !== undefined) cb(this.result);
    else this.onDone = cb;
  }

  /** The next response message, undefined once the call ended with OK; throws the mapped error otherwise. */
  async next(): Promise<Buffer | undefined> {
    for (;;) {
      const b = this.queue.shift();
      if (b) {
        if (this.queue.length < 4 && this.stream?.isPaused()) this.stream.resume();
        return b;
      }
      if (this.result !== undefined) {
        if (this.result) throw fromGrpc(this.result);
        return undefined;
      }
      await new Promise<void>((r) => (this.wake = r));
    }
  }

  /** The queued response messages (unary: after the call ended). */
  take(): Buffer[] {
    return this.queue.splice(0);
  }

  /** Send one framed message, resolving once the stream takes more. */
  async write(frame: Buffer): Promise<void> {
    if (frame.length - 5 > MAX_MESSAGE) throw fromGrpc(new StatusError(Status.RESOURCE_EXHAUSTED, `trying to send message larger than max (${frame.length - 5} vs. ${MAX_MESSAGE})`));
    const st = this.stream;
    if (this.result !== undefined || !st || st.destroyed || st.writableEnded) throw fromGrpc(this.result ?? new StatusError(Status.CANCELLED, "call already ended"));
    await writeWithDrain(st, frame, () => fromGrpc(this.result ?? new StatusError(Status.CANCELLED, "call ended")));
  }

  end(): void {
    const st = this.stream;
    if (st && !st.destroyed && !st.writableEnded) st.end();
  }
}

/**
 * Calls on one service. Typed by the service's full name given as a literal (a `const`): method names,
 * request fields and response shapes are checked against proto/. `RpcClient<string>` is the untyped
 * form, for code that does not know the service at compile time.
 */
export class RpcClient<S extends string> {
  private readonly methods = new Map<string, MethodTypes>();

  constructor(private readonly channel: Channel, readonly serviceName: S & KnownService<S>) {
    const svc = lookupService(serviceName);
    for (const m of svc.methodsArray) {
      m.resolve();
      this.methods.set(m.name, { req: m.resolvedRequestType!, res: m.resolvedResponseType!, path: `/${serviceName}/${m.name}` });
    }
  }

  private types(method: string): MethodTypes {
    const t = this.methods.get(method);
    if (!t) throw new Error(`${this.serviceName} has no method ${method}`);
    return t;
  }

  private call(ctx: CallContext, method: string, path: string, canRetry: boolean): Call {
    const span = tracer().startSpan(`${this.serviceName}/${method}`, {
      kind: SpanKind.CLIENT,
      attributes: { "rpc.system": "grpc", "rpc.service": this.serviceName, "rpc.method": method },
    }, ctx.trace);
    const headers: http2.OutgoingHttpHeaders = {
      ":method": "POST",
      ":path": path,
      "content-type": GRPC_CONTENT_TYPE,
      te: "trailers",
    };
    if (ctx.namespace) headers[NAMESPACE_HEADER] = ctx.namespace;
    if (ctx.lease) headers[LEASE_HEADER] = ctx.lease;
    if (ctx.headers) for (const k in ctx.headers) headers[k.toLowerCase()] = ctx.headers[k];
    propagation.inject(trace.setSpan(ctx.trace, span), headers);
    // Channels are connected lazily: reach the channel only through the Call.
    return new Call(this.channel, headers, ctx, span, canRetry);
  }

  private decode(t: Type, b: Buffer): Msg {
    try {
      return t.toObject(t.decode(b), DECODE_OPTIONS);
    } catch (e) {
      throw fromGrpc(new StatusError(Status.INTERNAL, `Response message parsing error: ${(e as Error).message}`));
    }
  }

  unary<M extends MethodOfKind<S, "unary">>(ctx: CallContext, method: M, req: ClientRequest<S, M>): Promise<ClientResponse<S, M>> {
    const { req: reqT, res: resT, path } = this.types(method);
    let frame: Buffer;
    try {
      frame = encodeFrame(reqT, req);
    } catch (e) {
      return Promise.reject(fromGrpc(new StatusError(Status.INTERNAL, `Request message serialization failure: ${(e as Error).message}`)));
    }
    if (frame.length - 5 > MAX_MESSAGE) return Promise.reject(fromGrpc(new StatusError(Status.RESOURCE_EXHAUSTED, `trying to send message larger than max (${frame.length - 5} vs. ${MAX_MESSAGE})`)));
    const call = this.call(ctx, method, path, true);
    return new Promise((resolve, reject) => {
      call.done((err) => {
        if (err) return reject(fromGrpc(err));
        const msgs = call.take();
        if (msgs.length !== 1) return reject(fromGrpc(new StatusError(msgs.length ? Status.UNIMPLEMENTED : Status.INTERNAL, msgs.length ? "Received more than one message for a unary call" : "No message received")));
        try {
          resolve(this.decode(resT, msgs[0]!) as ClientResponse<S, M>);
        } catch (e) {
          reject(e);
        }
      });
      call.start(frame);
    });
  }

  async *serverStream<M extends MethodOfKind<S, "server_stream">>(ctx: CallContext, method: M, req: ClientRequest<S, M>): AsyncIterable<ClientResponse<S, M>> {
    const { req: reqT, res: resT, path } = this.types(method);
    const call = this.call(ctx, method, path, true);
    call.start(encodeFrame(reqT, req));
    try {
      for (;;) {
        const b = await call.next();
        if (b === undefined) return;
        yield this.decode(resT, b) as ClientResponse<S, M>;
      }
    } finally {
      call.cancelWith(new StatusError(Status.CANCELLED, "Cancelled on client"));
    }
  }

  /** A client-streaming or bidirectional call (a client stream's one response comes as the only one). */
  bidi<M extends MethodOfKind<S, "bidi" | "client_stream">>(ctx: CallContext, method: M): BidiCall<ClientRequest<S, M>, ClientResponse<S, M>> {
    const { req: reqT, res: resT, path } = this.types(method);
    const call = this.call(ctx, method, path, false);
    call.start();
    const decode = (b: Buffer): ClientResponse<S, M> => this.decode(resT, b) as ClientResponse<S, M>;
    async function* responses(): AsyncIterable<ClientResponse<S, M>> {
      for (;;) {
        const b = await call.next();
        if (b === undefined) return;
        yield decode(b);
      }
    }
    return {
      send: (m) => call.write(encodeFrame(reqT, m)),
      end: () => call.end(),
      cancel: () => call.cancelWith(new StatusError(Status.CANCELLED, "Cancelled on client")),
      responses: responses(),
    };
  }

  /** Resolve when the channel is connected, or reject after `ms`. */
  waitForReady(ms: number): Promise<void> {
    return this.channel.waitForReady(ms);
  }
}
