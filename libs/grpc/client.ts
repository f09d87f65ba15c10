/**
 * The client side every proxy uses: encodes plain objects with our protos, carries namespace, lease,
 * deadline and trace context, and maps gRPC statuses back to native errors (the one place for that).
 */
import * as grpc from "@grpc/grpc-js";
import { trace } from "@opentelemetry/api";
import { metadataFor, type CallContext } from "../context";
import { fromGrpc } from "../errdefs";
import { grpcTarget } from "../config";
import { DECODE_OPTIONS, lookupService, type Type } from "../proto";
import { injectIntoMetadata, SpanKind, SpanStatusCode, tracer } from "../tracing";
import { MAX_MESSAGE, type Msg } from "./server";

interface MethodTypes {
  req: Type;
  res: Type;
}

export interface BidiCall {
  send(m: Msg): Promise<void>;
  end(): void;
  cancel(): void;
  responses: AsyncIterable<Msg>;
}

const channels = new Map<string, grpc.Client>();

/** One shared channel per target address. */
export function sharedChannel(address: string): grpc.Client {
  const target = grpcTarget(address);
  let c = channels.get(target);
  if (!c) {
    c = new grpc.Client(target, grpc.credentials.createInsecure(), {
      "grpc.max_receive_message_length": MAX_MESSAGE,
      "grpc.max_send_message_length": MAX_MESSAGE,
      "grpc.initial_reconnect_backoff_ms": 100,
      "grpc.max_reconnect_backoff_ms": 1000,
      "grpc.enable_channelz": 0,
      "grpc-node.flow_control_window": 16 * 1024 * 1024,
    });
    channels.set(target, c);
  }
  return c;
}

export function closeChannels(): void {
  for (const c of channels.values()) c.close();
  channels.clear();
}

export class RpcClient {
  private readonly client: grpc.Client;
  private readonly methods = new Map<string, MethodTypes>();

  constructor(address: string, readonly serviceName: string) {
    this.client = sharedChannel(address);
    const svc = lookupService(serviceName);
    for (const m of svc.methodsArray) {
      m.resolve();
      this.methods.set(m.name, { req: m.resolvedRequestType!, res: m.resolvedResponseType! });
    }
  }

  private types(method: string): MethodTypes {
    const t = this.methods.get(method);
    if (!t) throw new Error(`${this.serviceName} has no method ${method}`);
    return t;
  }

  private prepare(ctx: CallContext, method: string): { md: grpc.Metadata; opts: grpc.CallOptions; span: ReturnType<ReturnType<typeof tracer>["startSpan"]> } {
    const span = tracer().startSpan(`${this.serviceName}/${method}`, {
      kind: SpanKind.CLIENT,
      attributes: { "rpc.system": "grpc", "rpc.service": this.serviceName, "rpc.method": method },
    }, ctx.trace);
    const md = metadataFor(ctx);
    injectIntoMetadata(trace.setSpan(ctx.trace, span), md);
    const opts: grpc.CallOptions = {};
    if (ctx.deadline) opts.deadline = ctx.deadline;
    return { md, opts, span };
  }

  unary(ctx: CallContext, method: string, req: Msg): Promise<Msg> {
    const { req: reqT, res: resT } = this.types(method);
    const { md, opts, span } = this.prepare(ctx, method);
    return new Promise((resolve, reject) => {
      const call = this.client.makeUnaryRequest(
        `/${this.serviceName}/${method}`,
        (m: Msg) => Buffer.from(reqT.encode(reqT.fromObject(m)).finish()),
        (b: Buffer) => resT.toObject(resT.decode(b), DECODE_OPTIONS),
        req, md, opts,
        (err, value) => {
          ctx.signal.removeEventListener("abort", onAbort);
          if (err) {
            span.setStatus({ code: SpanStatusCode.ERROR, message: err.details });
            span.end();
            reject(fromGrpc(err));
          } else {
            span.end();
            resolve(value as Msg);
          }
        },
      );
      const onAbort = (): void => call.cancel();
      ctx.signal.addEventListener("abort", onAbort, { once: true });
    });
  }

  async *serverStream(ctx: CallContext, method: string, req: Msg): AsyncIterable<Msg> {
    const { req: reqT, res: resT } = this.types(method);
    const { md, opts, span } = this.prepare(ctx, method);
    const call = this.client.makeServerStreamRequest(
      `/${this.serviceName}/${method}`,
      (m: Msg) => Buffer.from(reqT.encode(reqT.fromObject(m)).finish()),
      (b: Buffer) => resT.toObject(resT.decode(b), DECODE_OPTIONS),
      req, md, opts,
    );
    const onAbort = (): void => call.cancel();
    ctx.signal.addEventListener("abort", onAbort, { once: true });
    try {
      for await (const m of call) yield m as Msg;
    } catch (e) {
      span.setStatus({ code: SpanStatusCode.ERROR, message: (e as Error).message });
      throw fromGrpc(e);
    } finally {
      ctx.signal.removeEventListener("abort", onAbort);
      call.cancel();
      span.end();
    }
  }

  bidi(ctx: CallContext, method: string): BidiCall {
    const { req: reqT, res: resT } = this.types(method);
    const { md, opts, span } = this.prepare(ctx, method);
    const call = this.client.makeBidiStreamRequest(
      `/${this.serviceName}/${method}`,
      (m: Msg) => Buffer.from(reqT.encode(reqT.fromObject(m)).finish()),
      (b: Buffer) => resT.toObject(resT.decode(b), DECODE_OPTIONS),
      md, opts,
    );
    const onAbort = (): void => call.cancel();
    ctx.signal.addEventListener("abort", onAbort, { once: true });
    async function* responses(): AsyncIterable<Msg> {
      try {
        for await (const m of call) yield m as Msg;
      } catch (e) {
        throw fromGrpc(e);
      } finally {
        ctx.signal.removeEventListener("abort", onAbort);
        span.end();
      }
    }
    return {
      send: (m) => new Promise((resolve, reject) => {
        call.write(m, (err?: Error | null) => (err ? reject(fromGrpc(err)) : resolve()));
      }),
      end: () => call.end(),
      cancel: () => call.cancel(),
      responses: responses(),
    };
  }

  /** Resolve when the channel is connected, or reject after `ms`. */
  waitForReady(ms: number): Promise<void> {
    return new Promise((resolve, reject) => {
      this.client.waitForReady(Date.now() + ms, (err) => (err ? reject(err) : resolve()));
    });
  }
}
