/**
 * The gRPC server every Flotilla process runs. It owns the cross-cutting concerns so services never
 * configure the server: request decoding (malformed -> InvalidArgument), the call context (namespace,
 * lease, deadline, cancellation, trace), per-RPC metrics, server spans and the one error mapping.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import * as grpc from "@grpc/grpc-js";
import { context as otelContext, trace } from "@opentelemetry/api";
import type { Logger } from "pino";
import { flotillaHeadersFromMetadata, leaseFromMetadata, namespaceFromMetadata, type CallContext } from "../context";
import { errCanceled, errInvalidArgument, errorCode, ErrorCodes, toGrpc } from "../errdefs";
import type { Metrics } from "../metrics";
import { grpcTarget, unixPath } from "../config";
import { DECODE_OPTIONS, lookupService, validateWire, type Type } from "../proto";
import { extractFromMetadata, SpanKind, SpanStatusCode, tracer } from "../tracing";

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

const identity = (b: Buffer): Buffer => b;

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

/** grpc-js call objects, as far as this module uses them. */
type AnyCall = grpc.ServerUnaryCall<Buffer, Buffer> | grpc.ServerReadableStream<Buffer, Buffer> | grpc.ServerWritableStream<Buffer, Buffer> | grpc.ServerDuplexStream<Buffer, Buffer>;

export interface RawCallInfo {
  path: string;
  kind: MethodKind;
  ctx: CallContext;
}

/** A handler that works on grpc-js calls with raw bytes (the gateway's pass-through). It resolves with the final status. */
export type RawHandler = (call: AnyCall, info: RawCallInfo, callback?: grpc.sendUnaryData<Buffer>) => Promise<void>;

export interface RpcServerOptions {
  service: string;
  log: Logger;
  metrics?: Metrics;
  maxMessage?: number;
}

export class RpcServer {
  readonly server: grpc.Server;
  private readonly log: Logger;
  private boundPath?: string;
  private readonly paths = new Set<string>();

  constructor(private readonly opts: RpcServerOptions) {
    this.log = opts.log;
    const max = opts.maxMessage ?? MAX_MESSAGE;
    this.server = new grpc.Server({
      "grpc.max_receive_message_length": max,
      "grpc.max_send_message_length": max,
      "grpc.keepalive_permit_without_calls": 1,
      "grpc.enable_channelz": 0,
    });
  }

  /** Register the handlers for a service by its proto full name; methods without a handler answer Unimplemented. */
  addService(fullName: string, handlers: ServiceHandlers): void {
    const svc = lookupService(fullName);
    for (const m of svc.methodsArray) {
      const h = handlers[m.name];
      if (!h) continue;
      m.resolve();
      const reqT = m.resolvedRequestType!;
      const resT = m.resolvedResponseType!;
      const kind = methodKind(m.requestStream, m.responseStream);
      const p = `/${fullName}/${m.name}`;
      this.register(p, kind, async (call, info, callback) => {
        const ctx = info.ctx;
        const send: Send = (msg) => writeWithBackpressure(call as grpc.ServerWritableStream<Buffer, Buffer>, encodeWith(resT, msg));
        switch (kind) {
          case "unary": {
            const res = await (h as UnaryFn)(ctx, decodeWith(reqT, (call as grpc.ServerUnaryCall<Buffer, Buffer>).request));
            callback!(null, encodeWith(resT, res));
            return;
          }
          case "server_stream":
            await (h as ServerStreamFn)(ctx, decodeWith(reqT, (call as grpc.ServerWritableStream<Buffer, Buffer>).request), send);
            (call as grpc.ServerWritableStream<Buffer, Buffer>).end();
            return;
          case "client_stream": {
            const res = await (h as ClientStreamFn)(ctx, decodeStream(reqT, call as grpc.ServerReadableStream<Buffer, Buffer>));
            callback!(null, encodeWith(resT, res));
            return;
          }
          case "bidi":
            await (h as BidiFn)(ctx, decodeStream(reqT, call as grpc.ServerDuplexStream<Buffer, Buffer>), send);
            (call as grpc.ServerDuplexStream<Buffer, Buffer>).end();
            return;
        }
      });
    }
  }

  /** Register a raw-bytes handler for one method path, with the same context, metrics, tracing and error mapping. */
  register(methodPath: string, kind: MethodKind, handler: RawHandler): void {
    const [, service = "", method = ""] = methodPath.split("/");
    const metrics = this.opts.metrics;
    const log = this.log;
    const wrap = (call: AnyCall, callback?: grpc.sendUnaryData<Buffer>): void => {
      const started = process.hrtime.bigint();
      const md = call.metadata;
      const parent = extractFromMetadata(md);
      const span = tracer().startSpan(methodPath.slice(1), {
        kind: SpanKind.SERVER,
        attributes: { "rpc.system": "grpc", "rpc.service": service, "rpc.method": method, "flotilla.service": this.opts.service },
      }, parent);
      const ac = new AbortController();
      (call as grpc.ServerUnaryCall<Buffer, Buffer>).on("cancelled", () => ac.abort(errCanceled("call canceled by client")));
      const deadline = call.getDeadline();
      const ctx: CallContext = {
        namespace: namespaceFromMetadata(md),
        lease: leaseFromMetadata(md),
        headers: flotillaHeadersFromMetadata(md),
        signal: ac.signal,
        deadline: deadline instanceof Date ? deadline : Number.isFinite(deadline) ? new Date(deadline) : undefined,
        trace: trace.setSpan(parent, span),
        log,
      };
      if (ctx.namespace) span.setAttribute("containerd.namespace", ctx.namespace);
      let finished = false;
      const finish = (code: grpc.status, err?: unknown): void => {
        if (finished) return;
        finished = true;
        span.setAttribute("rpc.grpc.status_code", code);
        if (code !== grpc.status.OK) span.setStatus({ code: SpanStatusCode.ERROR, message: (err as Error | undefined)?.message });
        span.end();
        const labels = { grpc_service: service, grpc_method: method, grpc_type: kind };
        metrics?.rpcHandled.inc({ ...labels, grpc_code: grpc.status[code] ?? String(code) });
        metrics?.rpcSeconds.observe(labels, Number(process.hrtime.bigint() - started) / 1e9);
      };
      const fail = (err: unknown): void => {
        const st = toGrpc(err);
        const c = errorCode(err);
        if (st.code === grpc.status.UNKNOWN || st.code === grpc.status.INTERNAL || c === ErrorCodes.Unknown && !("code" in Object(err))) {
          log.error({ err, method: methodPath }, "rpc failed");
        } else {
          log.debug({ method: methodPath, code: st.code, msg: st.details }, "rpc error");
        }
        finish(st.code, err);
        if (callback) callback({ code: st.code, details: st.details });
        else if (!call.cancelled) (call as grpc.ServerWritableStream<Buffer, Buffer>).emit("error", { code: st.code, details: st.details });
      };
      otelContext.with(ctx.trace, () => {
        handler(call, { path: methodPath, kind, ctx }, callback && ((err, value, trailer, flags) => {
          if (err) return fail(err);
          finish(grpc.status.OK);
          callback(null, value, trailer, flags);
        })).then(() => {
          if (!callback) finish(call.cancelled ? grpc.status.CANCELLED : grpc.status.OK);
        }, fail);
      });
    };
    this.paths.add(methodPath);
    const ok = this.server.register(methodPath, wrap as never, identity, identity, kind === "server_stream" ? "serverStream" : kind === "client_stream" ? "clientStream" : kind);
    if (!ok) throw new Error(`method ${methodPath} registered twice`);
  }

  /** True when a handler is registered for `/<service>/<method>`. */
  has(methodPath: string): boolean {
    return this.paths.has(methodPath);
  }

  /** Bind to a unix or TCP address. A stale unix socket file is removed first. Resolves with the TCP port, if any. */
  async listen(address: string): Promise<number> {
    const target = grpcTarget(address);
    const sock = unixPath(address);
    if (sock) {
      fs.mkdirSync(path.dirname(sock), { recursive: true });
      try {
        fs.unlinkSync(sock);
      } catch {
        /* no stale socket */
      }
      this.boundPath = sock;
    }
    return new Promise((resolve, reject) => {
      this.server.bindAsync(target, grpc.ServerCredentials.createInsecure(), (err, port) => {
        if (err) return reject(err);
        if (sock) fs.chmodSync(sock, 0o660);
        resolve(port);
      });
    });
  }

  /** Stop accepting calls, let running ones finish for up to `graceMs`, then cancel the rest. */
  async shutdown(graceMs = 5000): Promise<void> {
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.server.forceShutdown();
        resolve();
      }, graceMs);
      this.server.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
    if (this.boundPath) {
      try {
        fs.unlinkSync(this.boundPath);
      } catch {
        /* already gone */
      }
    }
  }
}

/** Write one message, waiting for 'drain' when the transport buffer is full. */
export function writeWithBackpressure(call: grpc.ServerWritableStream<Buffer, Buffer> | grpc.ServerDuplexStream<Buffer, Buffer>, buf: Buffer): Promise<void> {
  if (call.cancelled) return Promise.reject(errCanceled("call canceled by client"));
  if (call.write(buf)) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const onDrain = (): void => { call.off("cancelled", onCancel); resolve(); };
    const onCancel = (): void => { call.off("drain", onDrain); reject(errCanceled("call canceled by client")); };
    call.once("drain", onDrain);
    call.once("cancelled", onCancel);
  });
}

/**
 * Decode a request stream. The iterator must not destroy the call when the client half-closes:
 * the handler still has to answer (and the status still has to be sent) after the requests end.
 */
async function* decodeStream(t: Type, call: grpc.ServerReadableStream<Buffer, Buffer> | grpc.ServerDuplexStream<Buffer, Buffer>): AsyncIterable<Msg> {
  for await (const chunk of call.iterator({ destroyOnReturn: false })) yield decodeWith(t, chunk as Buffer);
}
