/**
 * OpenTelemetry tracing: a tracer provider per process, exporting over OTLP/HTTP when an endpoint is
 * configured (propagation only otherwise), W3C trace context carried in gRPC metadata and NATS headers.
 */
import { randomFillSync } from "node:crypto";
import { context, isSpanContextValid, propagation, trace, SpanKind, SpanStatusCode, TraceFlags, type Context, type Span, type SpanOptions, type Tracer } from "@opentelemetry/api";
// The propagator alone: @opentelemetry/core's index loads some 40 modules (semantic conventions, timers,
// exporters' helpers) that a process which only propagates never uses.
import { W3CTraceContextPropagator } from "@opentelemetry/core/build/src/trace/W3CTraceContextPropagator";
import type { NodeTracerProvider } from "@opentelemetry/sdk-trace-node";

export { SpanKind, SpanStatusCode };
export type { Context, Span, Tracer };

let provider: NodeTracerProvider | undefined;
let exporting = false;

/** True when spans leave this process (an OTLP endpoint is configured). */
export function tracingExported(): boolean {
  return exporting;
}

/**
 * Without an exporter, spans need not be recorded, only passed on: each call gets a non-recording span
 * that continues the incoming trace (or starts one), so `traceparent` still ties a call's gRPC hops
 * and events together, at the cost of two random ids. No context manager is installed either (it would
 * hook every promise); the trace travels in each call's context explicitly.
 */
class PropagatingTracer implements Tracer {
  startSpan(_name: string, _options?: SpanOptions, ctx: Context = context.active()): Span {
    const parent = trace.getSpanContext(ctx);
    const valid = !!parent && isSpanContextValid(parent);
    return trace.wrapSpanContext({
      traceId: valid ? parent.traceId : randomHex(16),
      spanId: randomHex(8),
      traceFlags: valid ? parent.traceFlags : TraceFlags.NONE,
      ...(valid && parent.traceState ? { traceState: parent.traceState } : {}),
    });
  }

  startActiveSpan<F extends (span: Span) => unknown>(name: string, ...rest: unknown[]): ReturnType<F> {
    const fn = rest[rest.length - 1] as F;
    const options = (rest.length > 1 ? rest[0] : undefined) as SpanOptions | undefined;
    const parent = (rest.length > 2 ? rest[1] : context.active()) as Context;
    const span = this.startSpan(name, options, parent);
    return context.with(trace.setSpan(parent, span), () => fn(span)) as ReturnType<F>;
  }
}

const idBytes = Buffer.alloc(16);
function randomHex(bytes: number): string {
  randomFillSync(idBytes, 0, bytes);
  return idBytes.toString("hex", 0, bytes);
}

/** How spans travel to the OTLP endpoint (OTEL's names; protobuf is OTEL's default). */
export type OtlpProtocol = "http/protobuf" | "http/json";

export interface TracingOptions {
  protocol?: OtlpProtocol;
  version?: string;
}

/**
 * The environment that makes a child process (a shim) export its spans where this process does: OTEL's
 * own variables, read back by `tracingFromEnv`. Empty when this process does not export.
 */
export function tracingEnv(endpoint: string, protocol: OtlpProtocol = "http/protobuf"): Record<string, string> {
  return endpoint ? { OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: endpoint, OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: protocol } : {};
}

/** Set up tracing from the environment `tracingEnv` describes (a process without a config file: the shim). */
export function tracingFromEnv(service: string, env: NodeJS.ProcessEnv = process.env): Tracer {
  const protocol = env.OTEL_EXPORTER_OTLP_TRACES_PROTOCOL === "http/json" ? "http/json" : "http/protobuf";
  return initTracing(service, env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT ?? "", { protocol });
}

/**
 * Set up tracing for this process. With an endpoint, every call gets a recording span, exported over
 * OTLP/HTTP as protobuf (or JSON with `protocol: "http/json"`). Without one, spans are only propagated
 * (PropagatingTracer): W3C trace context still flows through every process and event, and a call pays
 * next to nothing for it.
 */
export function initTracing(service: string, endpoint: string, opts: TracingOptions = {}): Tracer {
  const version = opts.version ?? "0.1.0";
  exporting = Boolean(endpoint);
  if (!endpoint) {
    const light = new PropagatingTracer();
    trace.setGlobalTracerProvider({ getTracer: () => light });
    propagation.setGlobalPropagator(new W3CTraceContextPropagator());
    return light;
  }
  // The SDK and the exporter (a few hundred modules) are loaded only by a process that exports.
  const { OTLPTraceExporter } = (
    opts.protocol === "http/json" ? require("@opentelemetry/exporter-trace-otlp-http") : require("@opentelemetry/exporter-trace-otlp-proto")
  ) as typeof import("@opentelemetry/exporter-trace-otlp-http");
  const { resourceFromAttributes } = require("@opentelemetry/resources") as typeof import("@opentelemetry/resources");
  const { BatchSpanProcessor } = require("@opentelemetry/sdk-trace-base") as typeof import("@opentelemetry/sdk-trace-base");
  const { NodeTracerProvider } = require("@opentelemetry/sdk-trace-node") as typeof import("@opentelemetry/sdk-trace-node");
  const { ATTR_SERVICE_NAME, ATTR_SERVICE_VERSION } = require("@opentelemetry/semantic-conventions") as typeof import("@opentelemetry/semantic-conventions");
  provider = new NodeTracerProvider({
    resource: resourceFromAttributes({ [ATTR_SERVICE_NAME]: `flotilla-${service}`, [ATTR_SERVICE_VERSION]: version }),
    spanProcessors: [new BatchSpanProcessor(new OTLPTraceExporter({ url: endpoint }), { scheduledDelayMillis: 500 })],
  });
  provider.register({ propagator: new W3CTraceContextPropagator() });
  // ttrpc requests (to and from shims) carry the trace too.
  (require("./ttrpc") as typeof import("./ttrpc")).propagateOverTtrpc();
  return trace.getTracer("flotilla", version);
}

export function tracer(): Tracer {
  return trace.getTracer("flotilla");
}

export async function shutdownTracing(): Promise<void> {
  await provider?.shutdown().catch(() => undefined);
}

/** Header-like carrier (NATS headers). */
export interface HeaderCarrier {
  get(k: string): string;
  set(k: string, v: string): void;
  keys(): string[];
}

/** ttrpc metadata (each key a list of values) as a header carrier: the trace context between the tasks process and its shims. */
export function metadataCarrier(md: Record<string, string[]>): HeaderCarrier {
  return {
    get: (k) => md[k]?.[0] ?? "",
    set: (k, v) => void (md[k] = [v]),
    keys: () => Object.keys(md),
  };
}

export function injectIntoHeaders(ctx: Context, h: HeaderCarrier): void {
  propagation.inject(ctx, h, { set: (c, k, v) => c.set(k, v) });
}

export function extractFromHeaders(h: HeaderCarrier): Context {
  return propagation.extract(context.active(), h, { keys: (c) => c.keys(), get: (c, k) => c.get(k) || undefined });
}

/** Run `fn` inside a span that ends with it, recording failures. */
export async function withSpan<T>(name: string, parent: Context, kind: SpanKind, fn: (span: Span, ctx: Context) => Promise<T>): Promise<T> {
  const span = tracer().startSpan(name, { kind }, parent);
  const ctx = trace.setSpan(parent, span);
  try {
    return await fn(span, ctx);
  } catch (e) {
    span.setStatus({ code: SpanStatusCode.ERROR, message: (e as Error)?.message });
    throw e;
  } finally {
    span.end();
  }
}
