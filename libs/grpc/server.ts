/**
 * The gRPC server every Flotilla process runs, on Node's own HTTP/2 server: gRPC is HTTP/2 with
 * length-prefixed messages and the status in trailers, and speaking it directly costs about half the
 * CPU per call that a general gRPC library does. It owns the cross-cutting concerns so services never
 * configure the server: request decoding (malformed -> InvalidArgument), message size limits, the call
 * context (namespace, lease, deadline, cancellation, trace), flow control both ways, per-RPC metrics,
 * server spans and the one error mapping.
 */
import * as fs from "node:fs";
import * as http2 from "node:http2";
import * as grpc from "@grpc/grpc-js";
import { context as otelContext, propagation, trace } from "@opentelemetry/api";
import type { Logger } from "pino";
import { LEASE_HEADER, NAMESPACE_HEADER, type CallContext } from "../context";
import { errCanceled, errDeadlineExceeded, errInvalidArgument, errorCode, errResourceExhausted, ErrorCodes, toGrpc } from "../errdefs";
import type { Metrics } from "../metrics";
import { DECODE_OPTIONS, lookupService, validateWire, type Type } from "../proto";
import { SpanKind, SpanStatusCode, tracer, tracingExported } from "../tracing";
import { createTunedServer } from "./h2-tuning";
import { closeHttp2, framePrefix, FrameReader, FramingError, GRPC_CONTENT_TYPE, listenHttp2, parseGrpcTimeout, respondStatusOnly, encodeStatusMessage } from "./wire";

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Msg = Record<string, any>;
export type Send = (m: Msg) => Promise<void>;
export type UnaryFn = (ctx: CallContext, req: Msg) => Promise<Msg>;
export type ServerStreamFn = (ctx: CallContext, req: Msg, send: Send) => Promise<void>;
export type ClientStreamFn = (ctx: CallContext, reqs: AsyncIterable<Msg>) => Promise<Msg>;
export type BidiFn = (ctx: CallContext, reqs: AsyncIterable<Msg>, send: Send) => Promise<void>;
/** One signature for all kinds so handlers are contextually typed; the method's kind decides what arrives. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Handler = (ctx: CallContext, reqOrStream: any, send: Send) => Promise<any>;
export type ServiceHandlers = Record<string, Handler>;

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

function encodeWith(t: Type, m: Msg): Buffer {
  return Buffer.from(t.encode(t.fromObject(m)).finish());
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
}

interface Method {
  kind: MethodKind;
  req: Type;
  res: Type;
  fn: Handler;
}

const first = (v: string | string[] | undefined): string | undefined => (Array.isArray(v) ? v[0] : v);
const headerGetter = {
  keys: (h: http2.IncomingHttpHeaders): string[] => Object.keys(h),
  get: (h: http2.IncomingHttpHeaders, k: string): string | undefined => first(h[k]),
};

/** The response side of one call: headers on the first message, framed messages with backpressure, status last. */
class ResponseWriter {
  private started = false;
  done = false;

  constructor(private readonly stream: http2.ServerHttp2Stream, private readonly maxMessage: number) {}

  async send(buf: Buffer): Promise<void> {
    const st = this.stream;
    if (this.done || st.destroyed || st.closed) throw errCanceled("call canceled by client");
    if (buf.length > this.maxMessage) throw errResourceExhausted(`trying to send message larger than max (${buf.length} vs. ${this.maxMessage})`);
    if (!this.started) {
      this.started = true;
      st.respond({ [http2.constants.HTTP2_HEADER_STATUS]: 200, "content-type": GRPC_CONTENT_TYPE }, { waitForTrailers: true });
    }
    let ok: boolean;
    if (buf.length <= 16384) {
      ok = st.write(Buffer.concat([framePrefix(buf.length), buf]));
    } else {
      st.write(framePrefix(buf.length));
      ok = st.write(buf);
    }
    if (ok) return;
    await new Promise<void>((resolve, reject) => {
      const onDrain = (): void => {
        st.off("close", onClose);
        resolve();
      };
      const onClose = (): void => {
        st.off("drain", onDrain);
        reject(errCanceled("call canceled by client"));
      };
      st.once("drain", onDrain);
      st.once("close", onClose);
    });
  }

  /** End the call with a status (once; later calls do nothing). */
  finish(code: number, message: string): void {
    if (this.done) return;
    this.done = true;
    const st = this.stream;
    if (st.destroyed || st.closed) return;
    if (!this.started) {
      respondStatusOnly(st, code, message);
    } else {
      st.once("wantTrailers", () => {
        try {
          st.sendTrailers(code === 0 ? { "grpc-status": "0" } : { "grpc-status": String(code), "grpc-message": encodeStatusMessage(message) });
        } catch {
          /* the client is gone */
        }
      });
      st.end();
    }
    // A client still sending gets its remaining data read and dropped (its window keeps opening).
    if (!st.readableEnded) st.resume();
  }
}

/** Decoded request messages, read with flow control: the stream pauses while too many wait. */
function requestMessages(stream: http2.ServerHttp2Stream, t: Type, maxMessage: number): AsyncIterable<Msg> {
  const reader = new FrameReader(maxMessage);
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
      failure = e instanceof FramingError ? Object.assign(new Error(e.message), { code: e.grpcCode, details: e.message }) : e;
    }
    if (queue.length >= 8) stream.pause();
    notify();
  };
  const onEnd = (): void => {
    ended = true;
    if (reader.partial && !failure) failure = Object.assign(new Error("request ended inside a message"), { code: grpc.status.INTERNAL, details: "request ended inside a message" });
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

/** The single request message of a unary or server-streaming call. */
async function singleRequest(reqs: AsyncIterable<Msg>): Promise<Msg> {
  let req: Msg | undefined;
  for await (const m of reqs) {
    if (req !== undefined) throw Object.assign(new Error("more than one request message for a unary request"), { code: grpc.status.UNIMPLEMENTED, details: "more than one request message for a unary request" });
    req = m;
  }
  if (req === undefined) throw Object.assign(new Error("no request message"), { code: grpc.status.INTERNAL, details: "no request message" });
  return req;
}

export class RpcServer {
  readonly server: http2.Http2Server;
  private readonly log: Logger;
  private readonly maxMessage: number;
  private readonly methods = new Map<string, Method>();
  private readonly sessions = new Set<http2.Http2Session>();
  private boundPath?: string;
  private draining = false;

  constructor(private readonly opts: RpcServerOptions) {
    this.log = opts.log;
    this.maxMessage = opts.maxMessage ?? MAX_MESSAGE;
    const windowBytes = opts.windowBytes ?? 16 << 20;
    this.server = createTunedServer(windowBytes, opts.maxStreamsPerSession ?? 900, this.sessions);
    this.server.on("stream", (stream, headers) => this.onStream(stream, headers));
  }

  /** Register the handlers for a service by its proto full name; methods without a handler answer Unimplemented. */
  addService(fullName: string, handlers: ServiceHandlers): void {
    const svc = lookupService(fullName);
    for (const m of svc.methodsArray) {
      const fn = handlers[m.name];
      if (!fn) continue;
      m.resolve();
      const p = `/${fullName}/${m.name}`;
      if (this.methods.has(p)) throw new Error(`method ${p} registered twice`);
      this.methods.set(p, { kind: methodKind(m.requestStream, m.responseStream), req: m.resolvedRequestType!, res: m.resolvedResponseType!, fn });
    }
  }

  /** True when a handler is registered for `/<service>/<method>`. */
  has(methodPath: string): boolean {
    return this.methods.has(methodPath);
  }

  private onStream(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): void {
    stream.on("error", () => undefined);
    const methodPath = String(headers[http2.constants.HTTP2_HEADER_PATH] ?? "");
    const m = this.methods.get(methodPath);
    if (!m) {
      respondStatusOnly(stream, grpc.status.UNIMPLEMENTED, `unknown method ${methodPath}`);
      stream.resume();
      return;
    }
    if (this.draining) {
      respondStatusOnly(stream, grpc.status.UNAVAILABLE, "server is shutting down");
      stream.resume();
      return;
    }
    const [, service = "", method = ""] = methodPath.split("/");
    const started = process.hrtime.bigint();
    const out = new ResponseWriter(stream, this.maxMessage);
    const parent = headers.traceparent ? propagation.extract(otelContext.active(), headers, headerGetter) : otelContext.active();
    const span = tracingExported()
      ? tracer().startSpan(methodPath.slice(1), { kind: SpanKind.SERVER, attributes: { "rpc.system": "grpc", "rpc.service": service, "rpc.method": method, "flotilla.service": this.opts.service } }, parent)
      : undefined;
    const ac = new AbortController();
    const timeoutMs = parseGrpcTimeout(headers["grpc-timeout"]);
    let flotilla: Record<string, string> | undefined;
    for (const k in headers) if (k.startsWith("flotilla-")) (flotilla ??= {})[k] = first(headers[k])!;
    const ctx: CallContext = {
      namespace: first(headers[NAMESPACE_HEADER]) || undefined,
      lease: first(headers[LEASE_HEADER]) || undefined,
      headers: flotilla,
      signal: ac.signal,
      deadline: timeoutMs !== undefined ? new Date(Date.now() + timeoutMs) : undefined,
      trace: span ? trace.setSpan(parent, span) : parent,
      log: this.log,
    };
    if (span && ctx.namespace) span.setAttribute("containerd.namespace", ctx.namespace);

    let timer: NodeJS.Timeout | undefined;
    let finished = false;
    const finish = (code: number, message: string, err?: unknown): void => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      out.finish(code, message);
      if (span) {
        span.setAttribute("rpc.grpc.status_code", code);
        if (code !== grpc.status.OK) span.setStatus({ code: SpanStatusCode.ERROR, message: (err as Error | undefined)?.message ?? message });
        span.end();
      }
      this.opts.metrics?.rpcDone(service, method, m.kind, grpc.status[code] ?? String(code), Number(process.hrtime.bigint() - started) / 1e9);
    };
    const fail = (err: unknown): void => {
      if (finished) return;
      const st = toGrpc(err);
      const c = errorCode(err);
      if (st.code === grpc.status.UNKNOWN || st.code === grpc.status.INTERNAL || (c === ErrorCodes.Unknown && !("code" in Object(err)))) {
        this.log.error({ err, method: methodPath }, "rpc failed");
      } else {
        this.log.debug({ method: methodPath, code: st.code, msg: st.details }, "rpc error");
      }
      finish(st.code, st.details, err);
    };
    stream.on("close", () => {
      if (finished) return;
      ac.abort(errCanceled("call canceled by client"));
      finish(grpc.status.CANCELLED, "call canceled by client");
    });
    if (timeoutMs !== undefined) {
      timer = setTimeout(() => {
        ac.abort(errDeadlineExceeded("deadline exceeded"));
        finish(grpc.status.DEADLINE_EXCEEDED, "Deadline exceeded");
      }, Math.min(timeoutMs, 2 ** 31 - 1));
    }

    const send: Send = (msg) => out.send(encodeWith(m.res, msg));
    const reqs = requestMessages(stream, m.req, this.maxMessage);
    const run = async (): Promise<void> => {
      switch (m.kind) {
        case "unary": {
          const res = await (m.fn as UnaryFn)(ctx, await singleRequest(reqs));
          await out.send(encodeWith(m.res, res));
          return;
        }
        case "server_stream":
          return (m.fn as ServerStreamFn)(ctx, await singleRequest(reqs), send);
        case "client_stream": {
          const res = await (m.fn as ClientStreamFn)(ctx, reqs);
          await out.send(encodeWith(m.res, res));
          return;
        }
        case "bidi":
          return (m.fn as BidiFn)(ctx, reqs, send);
      }
    };
    otelContext.with(ctx.trace, () => {
      run().then(() => finish(grpc.status.OK, ""), fail);
    });
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
