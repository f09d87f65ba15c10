/**
 * The gRPC server every Flotilla process runs, on Node's own HTTP/2 server: gRPC is HTTP/2 with
 * length-prefixed messages and the status in trailers, and speaking it directly costs about half the
 * CPU per call that a general gRPC library does. It owns the cross-cutting concerns so services never
 * configure the server: request decoding (malformed -> InvalidArgument), message size limits, the call
 * context (namespace, lease, deadline, cancellation, trace), flow control both ways, per-RPC metrics,
 * server spans and the one error mapping.
 */
import { Status } from "./status";
import * as fs from "node:fs";
import * as http2 from "node:http2";
import * as protobuf from "protobufjs";
import { context as otelContext, propagation, trace } from "@opentelemetry/api";
import type { Logger } from "pino";
import { LEASE_HEADER, NAMESPACE_HEADER, type CallContext } from "../context";
import { errCanceled, errDeadlineExceeded, errInvalidArgument, errorCode, errResourceExhausted, ErrorCodes, toGrpc } from "../errdefs";
import type { Metrics, RpcTally } from "../metrics";
import { DECODE_OPTIONS, lookupService, validateWire, type Type } from "../proto";
import type { CheckedHandlers, MethodName, Msg, ServerRequest, ServerResponse, ServiceName, Services } from "../proto/types";
import { SpanKind, SpanStatusCode, tracer, tracingExported, type Span } from "../tracing";
import { createTunedServer } from "./h2-tuning";
import type { TlsMaterial } from "./tls";
import { closeHttp2, FrameReader, type MessageBuffers, FramingError, GRPC_CONTENT_TYPE, listenHttp2, parseGrpcTimeout, type H2Server, respondStatusOnly, statusTrailers, writeWithDrain } from "./wire";

export type { Msg };
export type Send<T = Msg> = (m: T) => Promise<void>;
export type UnaryFn = (ctx: CallContext, req: Msg) => Promise<Msg>;
export type ServerStreamFn = (ctx: CallContext, req: Msg, send: Send) => Promise<void>;
export type ClientStreamFn = (ctx: CallContext, reqs: AsyncIterable<Msg>) => Promise<Msg>;
export type BidiFn = (ctx: CallContext, reqs: AsyncIterable<Msg>, send: Send) => Promise<void>;
/** What the server calls, whatever the kind; the method's kind decides what arrives. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Handler = (ctx: CallContext, reqOrStream: any, send: Send) => Promise<any>;

/** The handler of method `M` of service `S`: decoded requests in, Input messages out. */
export type HandlerOf<S extends ServiceName, M extends MethodName<S>> = KindFn<MethodKindOf<S, M>, ServerRequest<S, M>, ServerResponse<S, M>>;
type MethodKindOf<S extends ServiceName, M extends MethodName<S>> = Services[S][M] extends { kind: infer K } ? K : never;
type KindFn<K, Req, Res> = K extends "unary"
  ? (ctx: CallContext, req: Req) => Promise<Res>
  : K extends "server_stream"
    ? (ctx: CallContext, req: Req, send: Send<Res>) => Promise<void>
    : K extends "client_stream"
      ? (ctx: CallContext, reqs: AsyncIterable<Req>) => Promise<Res>
      : (ctx: CallContext, reqs: AsyncIterable<Req>, send: Send<Res>) => Promise<void>;

/** Handlers for some methods of service `S` (the others answer Unimplemented). */
export type ServiceHandlers<S extends ServiceName> = { [M in MethodName<S>]?: HandlerOf<S, M> };

/** Handlers of `S`, checked as addService checks them: for factories that build a service's handlers. */
export function serviceHandlers<S extends ServiceName, H extends ServiceHandlers<S>>(_service: S, handlers: H & CheckedHandlers<S, H>): ServiceHandlers<S> {
  return handlers;
}

export type MethodKind = "unary" | "server_stream" | "client_stream" | "bidi";

export const MAX_MESSAGE = 16 * 1024 * 1024;

export function methodKind(requestStream: boolean | undefined, responseStream: boolean | undefined): MethodKind {
  if (requestStream && responseStream) return "bidi";
  if (requestStream) return "client_stream";
  if (responseStream) return "server_stream";
  return "unary";
}

function decodeWith(t: Type, buf: Buffer): Msg {
  try {
    validateWire(t, buf);
    return t.toObject(t.decode(buf), DECODE_OPTIONS);
  } catch (e) {
    throw errInvalidArgument(`malformed ${t.fullName.slice(1)}: ${(e as Error).message}`);
  }
}

/**
 * Encode `m` as one gRPC frame. The 5-byte prefix is reserved in the writer (4 + 1 zero bytes) and
 * filled in afterwards, so the message is written once and never copied.
 */
export function encodeFrame(t: Type, m: Msg): Buffer {
  const w = protobuf.Writer.create();
  w.fixed32(0).uint32(0);
  const u8 = t.encode(t.fromObject(m), w).finish();
  const buf = Buffer.isBuffer(u8) ? u8 : Buffer.from(u8.buffer, u8.byteOffset, u8.length);
  buf.writeUInt32BE(buf.length - 5, 1);
  return buf;
}

export interface RpcServerOptions {
  service: string;
  log: Logger;
  metrics?: Metrics;
  maxMessage?: number;
  /** Connection and per-stream receive window (default 16 MiB). */
  windowBytes?: number;
  /** Streams a client session may open before it is asked to reconnect (default 900; see h2-tuning). */
  maxStreamsPerSession?: number;
  /** The process's message buffers (large requests are read into them); plain allocations without. */
  buffers?: MessageBuffers;
  /** Serve mutual TLS (a TCP address only; see tls.ts). */
  tls?: TlsMaterial;
}

interface Method {
  kind: MethodKind;
  req: Type;
  res: Type;
  fn: Handler;
  path: string;
  service: string;
  method: string;
}

/** How early a client's reset may come and still count as its deadline. */
const DEADLINE_SKEW_MS = 50;

const first = (v: string | string[] | undefined): string | undefined => (Array.isArray(v) ? v[0] : v);
const headerGetter = {
  keys: (h: http2.IncomingHttpHeaders): string[] => Object.keys(h),
  get: (h: http2.IncomingHttpHeaders, k: string): string | undefined => first(h[k]),
};

const RESPONSE_HEADERS: http2.OutgoingHttpHeaders = { [http2.constants.HTTP2_HEADER_STATUS]: 200, "content-type": GRPC_CONTENT_TYPE };
const OK_TRAILERS: http2.OutgoingHttpHeaders = { "grpc-status": "0" };
const STREAM_OPTIONS = { waitForTrailers: true };

const statusError = (code: number, details: string): Error => Object.assign(new Error(details), { code, details });

/** The response side of one call: headers on the first message, framed messages with backpressure, status last. */
class ResponseWriter {
  private started = false;
  done = false;
  private trailers: http2.OutgoingHttpHeaders = OK_TRAILERS;

  constructor(private readonly stream: http2.ServerHttp2Stream, private readonly maxMessage: number, private readonly tally: RpcTally | undefined) {}

  private readonly onWantTrailers = (): void => {
    try {
      this.stream.sendTrailers(this.trailers);
    } catch {
      /* the client is gone */
    }
  };

  private check(frame: Buffer): void {
    const st = this.stream;
    if (this.done || st.destroyed || st.closed) throw errCanceled("call canceled by client");
    const n = frame.length - 5;
    if (n > this.maxMessage) throw errResourceExhausted(`trying to send message larger than max (${n} vs. ${this.maxMessage})`);
    if (!this.started) {
      this.started = true;
      st.respond(RESPONSE_HEADERS, STREAM_OPTIONS);
    }
  }

  /** Send one framed message (from encodeFrame), resolving once the stream can take more. */
  async send(frame: Buffer): Promise<void> {
    this.check(frame);
    this.tally?.sent();
    await writeWithDrain(this.stream, frame, () => errCanceled("call canceled by client"));
  }

  /** A unary answer: headers, the one message and the OK status in one go. Throws like `send`. */
  sendLast(frame: Buffer): void {
    this.check(frame);
    this.tally?.sent();
    this.done = true;
    const st = this.stream;
    st.once("wantTrailers", this.onWantTrailers);
    st.end(frame);
  }

  /** End the call with a status (once; later calls do nothing). */
  finish(code: number, message: string, details?: Buffer): void {
    if (this.done) return;
    this.done = true;
    const st = this.stream;
    if (st.destroyed || st.closed) return;
    if (!this.started) {
      respondStatusOnly(st, code, message, details);
    } else {
      if (code !== 0) this.trailers = statusTrailers(code, message, details);
      st.once("wantTrailers", this.onWantTrailers);
      st.end();
    }
    // A client still sending gets its remaining data read and dropped (its window keeps opening).
    if (!st.readableEnded) st.resume();
  }
}

/** Decoded request messages, read with flow control: the stream pauses while too many wait. */
function requestMessages(stream: http2.ServerHttp2Stream, t: Type, maxMessage: number, tally: RpcTally | undefined, buffers: MessageBuffers | undefined): AsyncIterable<Msg> {
  const reader = new FrameReader(maxMessage, buffers);
  const queue: Buffer[] = [];
  let ended = false;
  let failure: unknown;
  let wake: (() => void) | undefined;
  const notify = (): void => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  const onData = (chunk: Buffer): void => {
    if (failure) return;
    try {
      for (const m of reader.push(chunk)) queue.push(m);
    } catch (e) {
      failure = e instanceof FramingError ? statusError(e.grpcCode, e.message) : e;
    }
    if (queue.length >= 8) stream.pause();
    notify();
  };
  const onEnd = (): void => {
    ended = true;
    if (reader.partial && !failure) failure = statusError(Status.INTERNAL, "request ended inside a message");
    notify();
  };
  const onClose = (): void => {
    if (!ended && !failure) failure = errCanceled("call canceled by client");
    notify();
  };
  stream.on("data", onData);
  stream.on("end", onEnd);
  stream.on("close", onClose);
  return {
    [Symbol.asyncIterator](): AsyncIterator<Msg> {
      return {
        async next(): Promise<IteratorResult<Msg>> {
          for (;;) {
            if (failure) throw failure;
            const b = queue.shift();
            if (b) {
              tally?.received();
              if (queue.length < 4 && stream.isPaused()) stream.resume();
              return { value: decodeWith(t, b), done: false };
            }
            if (ended) return { value: undefined, done: true };
            await new Promise<void>((r) => (wake = r));
          }
        },
        async return(): Promise<IteratorResult<Msg>> {
          return { value: undefined, done: true };
        },
      };
    },
  };
}

/**
 * One call in progress. Unary and server-streaming requests are collected from 'data' events and
 * decoded once the client has half-closed (no iterator, no queue); the call's AbortSignal is only made
 * when a handler asks for it.
 */
class ServerCall {
  private readonly out: ResponseWriter;
  private readonly started: bigint | undefined;
  private readonly tally: RpcTally | undefined;
  private readonly span: Span | undefined;
  private timer: NodeJS.Timeout | undefined;
  private finished = false;
  private ac: AbortController | undefined;
  private abortReason: unknown;
  private aborted = false;
  // Unary and server-streaming requests.
  private reader: FrameReader | undefined;
  private single: Buffer | undefined;
  private count = 0;
  private failure: unknown;
  readonly ctx: CallContext;

  constructor(private readonly srv: RpcServer, private readonly m: Method, private readonly stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) {
    this.tally = srv.metrics?.rpcStarted(m.service, m.method, m.kind);
    this.out = new ResponseWriter(stream, srv.maxMessage, this.tally);
    this.started = srv.metrics ? process.hrtime.bigint() : undefined;
    const parent = headers.traceparent ? propagation.extract(otelContext.active(), headers, headerGetter) : otelContext.active();
    this.span = tracingExported()
      ? tracer().startSpan(m.path.slice(1), { kind: SpanKind.SERVER, attributes: { "rpc.system": "grpc", "rpc.service": m.service, "rpc.method": m.method, "flotilla.service": srv.serviceName } }, parent)
      : undefined;
    const timeoutMs = headers["grpc-timeout"] === undefined ? undefined : parseGrpcTimeout(headers["grpc-timeout"]);
    let flotilla: Record<string, string> | undefined;
    for (const k in headers) if (k.startsWith("flotilla-")) (flotilla ??= {})[k] = first(headers[k])!;
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const call = this;
    this.ctx = {
      namespace: first(headers[NAMESPACE_HEADER]) || undefined,
      lease: first(headers[LEASE_HEADER]) || undefined,
      headers: flotilla,
      // An own, enumerable getter: `{ ...ctx }` copies the signal itself.
      get signal(): AbortSignal {
        return call.signal();
      },
      deadline: timeoutMs !== undefined ? new Date(Date.now() + timeoutMs) : undefined,
      trace: this.span ? trace.setSpan(parent, this.span) : parent,
      log: srv.log,
    };
    if (this.span && this.ctx.namespace) this.span.setAttribute("containerd.namespace", this.ctx.namespace);
    stream.on("close", this.onClose);
    if (timeoutMs !== undefined) this.timer = setTimeout(this.onTimeout, Math.min(timeoutMs, 2 ** 31 - 1));
  }

  private signal(): AbortSignal {
    if (!this.ac) {
      this.ac = new AbortController();
      if (this.aborted) this.ac.abort(this.abortReason);
    }
    return this.ac.signal;
  }

  private abort(reason: unknown): void {
    if (this.aborted) return;
    this.aborted = true;
    this.abortReason = reason;
    this.ac?.abort(reason);
  }

  private readonly onClose = (): void => {
    if (this.finished) return;
    // A client whose own deadline timer fired first resets the stream at about our deadline: that is
    // the deadline, not a cancel (the two timers start a few milliseconds apart).
    const d = this.ctx.deadline?.getTime();
    if (d !== undefined && Date.now() >= d - DEADLINE_SKEW_MS) return this.onTimeout();
    this.abort(errCanceled("call canceled by client"));
    this.finish(Status.CANCELLED, "call canceled by client");
  };

  private readonly onTimeout = (): void => {
    this.abort(errDeadlineExceeded("deadline exceeded"));
    this.finish(Status.DEADLINE_EXCEEDED, "Deadline exceeded");
  };

  start(): void {
    const k = this.m.kind;
    if (k === "unary" || k === "server_stream") {
      this.reader = new FrameReader(this.srv.maxMessage, this.srv.buffers);
      this.stream.on("data", this.onData);
      this.stream.on("end", this.onEnd);
      return;
    }
    const reqs = requestMessages(this.stream, this.m.req, this.srv.maxMessage, this.tally, this.srv.buffers);
    this.run(async () => {
      if (k === "client_stream") {
        const res = await (this.m.fn as ClientStreamFn)(this.ctx, reqs);
        this.out.sendLast(encodeFrame(this.m.res, res));
      } else {
        await (this.m.fn as BidiFn)(this.ctx, reqs, this.send);
      }
    });
  }

  private readonly send: Send = (msg) => this.out.send(encodeFrame(this.m.res, msg));

  private readonly onData = (chunk: Buffer): void => {
    if (this.failure) return;
    try {
      const msgs = this.reader!.push(chunk);
      for (let i = 0; i < msgs.length; i++) if (this.count++ === 0) this.single = msgs[i];
    } catch (e) {
      // A compressed or oversized message: answer at once, the rest of the body is dropped.
      this.failure = e instanceof FramingError ? statusError(e.grpcCode, e.message) : e;
      this.fail(this.failure);
    }
  };

  private readonly onEnd = (): void => {
    if (this.finished) return;
    let req: Msg;
    try {
      if (this.failure) throw this.failure;
      if (this.reader!.partial) throw statusError(Status.INTERNAL, "request ended inside a message");
      if (this.count > 1) throw statusError(Status.UNIMPLEMENTED, "more than one request message for a unary request");
      if (this.count === 0) throw statusError(Status.INTERNAL, "no request message");
      req = decodeWith(this.m.req, this.single!);
    } catch (e) {
      this.fail(e);
      return;
    }
    this.single = undefined;
    this.tally?.received();
    if (this.m.kind === "unary") {
      this.run(async () => {
        const res = await (this.m.fn as UnaryFn)(this.ctx, req);
        this.out.sendLast(encodeFrame(this.m.res, res));
      });
    } else {
      this.run(() => (this.m.fn as ServerStreamFn)(this.ctx, req, this.send));
    }
  };

  private run(body: () => Promise<void>): void {
    const go = (): void => {
      body().then(this.onOk, this.fail);
    };
    // Without an exporter no context manager is installed: the trace travels in ctx alone.
    if (this.span) otelContext.with(this.ctx.trace, go);
    else go();
  }

  private readonly onOk = (): void => {
    if (this.finished) return;
    if (this.out.done) this.settle(Status.OK, "");
    else this.finish(Status.OK, "");
  };

  readonly fail = (err: unknown): void => {
    if (this.finished) return;
    const st = toGrpc(err);
    const c = errorCode(err);
    if (st.code === Status.UNKNOWN || st.code === Status.INTERNAL || (c === ErrorCodes.Unknown && !("code" in Object(err)))) {
      this.srv.log.error({ err, method: this.m.path }, "rpc failed");
    } else {
      this.srv.log.debug({ method: this.m.path, code: st.code, msg: st.details }, "rpc error");
    }
    this.finish(st.code, st.details, err);
  };

  private finish(code: number, message: string, err?: unknown): void {
    if (this.finished) return;
    this.out.finish(code, message, err === undefined ? undefined : statusDetailsOf(err, code));
    this.settle(code, message, err);
  }

  /** Record the outcome (the response is already ended). */
  private settle(code: number, message: string, err?: unknown): void {
    if (this.finished) return;
    this.finished = true;
    if (this.timer) clearTimeout(this.timer);
    const span = this.span;
    if (span) {
      span.setAttribute("rpc.grpc.status_code", code);
      if (code !== Status.OK) span.setStatus({ code: SpanStatusCode.ERROR, message: (err as Error | undefined)?.message ?? message });
      span.end();
    }
    if (this.started !== undefined) this.tally!.done(code, Number(process.hrtime.bigint() - this.started) / 1e9);
  }
}

/**
 * The encoded google.rpc.Status an error carries for `grpc-status-details-bin` with status `code`: its
 * own `statusDetails`, or, for an error our client made from another server's status (fromGrpc keeps
 * that as the cause) and passed on unchanged, the details that server sent with the same code.
 */
function statusDetailsOf(err: unknown, code: number): Buffer | undefined {
  const own = (err as { statusDetails?: unknown } | undefined)?.statusDetails;
  if (Buffer.isBuffer(own)) return own;
  const cause = (err as { cause?: { code?: unknown; statusDetails?: unknown } } | undefined)?.cause;
  return cause?.code === code && Buffer.isBuffer(cause.statusDetails) ? cause.statusDetails : undefined;
}

const ignore = (): void => undefined;

export class RpcServer {
  readonly server: H2Server;
  readonly log: Logger;
  readonly metrics: Metrics | undefined;
  readonly serviceName: string;
  readonly maxMessage: number;
  /** Where large request messages are read into (see MessageBuffers); plain allocations without. */
  readonly buffers: MessageBuffers | undefined;
  private readonly methods = new Map<string, Method>();
  private readonly sessions = new Set<http2.Http2Session>();
  private boundPath?: string;
  private draining = false;

  constructor(private readonly opts: RpcServerOptions) {
    this.log = opts.log;
    this.metrics = opts.metrics;
    this.serviceName = opts.service;
    this.maxMessage = opts.maxMessage ?? MAX_MESSAGE;
    this.buffers = opts.buffers;
    const windowBytes = opts.windowBytes ?? 16 << 20;
    this.server = createTunedServer(windowBytes, opts.maxStreamsPerSession ?? 900, this.sessions, opts.tls && { tls: opts.tls, log: opts.log });
    this.server.on("stream", (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => this.onStream(stream, headers));
  }

  /** Register the handlers for a service by its proto full name; methods without a handler answer Unimplemented. */
  addService<S extends ServiceName, H extends ServiceHandlers<S>>(fullName: S, handlers: H & CheckedHandlers<S, H>): void {
    this.addUntypedService(fullName, handlers as Record<string, Handler | undefined>);
  }

  /**
   * The escape hatch: register handlers for a service loaded into the proto root at run time (a test's
   * fixture proto), which the generated types do not know. Services use `addService`.
   */
  addUntypedService(fullName: string, handlers: Record<string, Handler | undefined>): void {
    const svc = lookupService(fullName);
    for (const m of svc.methodsArray) {
      const fn = handlers[m.name];
      if (!fn) continue;
      m.resolve();
      const p = `/${fullName}/${m.name}`;
      if (this.methods.has(p)) throw new Error(`method ${p} registered twice`);
      this.methods.set(p, { kind: methodKind(m.requestStream, m.responseStream), req: m.resolvedRequestType!, res: m.resolvedResponseType!, fn, path: p, service: fullName, method: m.name });
    }
  }

  /** True when a handler is registered for `/<service>/<method>`. */
  has(methodPath: string): boolean {
    return this.methods.has(methodPath);
  }

  private onStream(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): void {
    stream.on("error", ignore);
    const methodPath = String(headers[http2.constants.HTTP2_HEADER_PATH] ?? "");
    const m = this.methods.get(methodPath);
    if (!m) {
      respondStatusOnly(stream, Status.UNIMPLEMENTED, `unknown method ${methodPath}`);
      stream.resume();
      return;
    }
    if (this.draining) {
      respondStatusOnly(stream, Status.UNAVAILABLE, "server is shutting down");
      stream.resume();
      return;
    }
    new ServerCall(this, m, stream, headers).start();
  }

  /** Bind to a unix or TCP address. A stale unix socket file is removed first. Resolves with the TCP port, if any. */
  async listen(address: string): Promise<number> {
    const { port, socketPath } = await listenHttp2(this.server, address);
    this.boundPath = socketPath;
    return port;
  }

  /** Stop accepting calls, let running ones finish for up to `graceMs`, then cancel the rest. */
  async shutdown(graceMs = 5000): Promise<void> {
    this.draining = true;
    await closeHttp2(this.server, this.sessions, graceMs);
    if (this.boundPath) {
      try {
        fs.unlinkSync(this.boundPath);
      } catch {
        /* already gone */
      }
    }
  }
}
