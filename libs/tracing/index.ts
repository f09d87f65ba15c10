/**
 * OpenTelemetry tracing: a tracer provider per process, exporting over OTLP/HTTP when an endpoint is
 * configured, W3C trace context carried in gRPC metadata and NATS headers.
 */
import { context, propagation, trace, SpanKind, SpanStatusCode, type Context, type Span, type Tracer } from "@opentelemetry/api";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { BatchSpanProcessor } from "@opentelemetry/sdk-trace-base";
import { NodeTracerProvider } from "@opentelemetry/sdk-trace-node";
import { ATTR_SERVICE_NAME, ATTR_SERVICE_VERSION } from "@opentelemetry/semantic-conventions";
import type { Metadata } from "@grpc/grpc-js";

export { SpanKind, SpanStatusCode };
export type { Context, Span, Tracer };

let provider: NodeTracerProvider | undefined;

/**
 * Set up tracing for this process. With an endpoint, every call gets a recording span, exported over
 * OTLP/HTTP. Without one, no provider is registered: spans are the API's non-recording ones, which carry
 * the incoming trace context on unchanged (W3C headers still flow through every process), and no
 * context manager hooks every promise; a call then pays nothing for tracing.
 */
export function initTracing(service: string, endpoint: string, version = "0.1.0"): Tracer {
  if (!endpoint) {
    propagation.setGlobalPropagator(new W3CTraceContextPropagator());
    return trace.getTracer("flotilla", version);
  }
  provider = new NodeTracerProvider({
    resource: resourceFromAttributes({ [ATTR_SERVICE_NAME]: `flotilla-${service}`, [ATTR_SERVICE_VERSION]: version }),
    spanProcessors: [new BatchSpanProcessor(new OTLPTraceExporter({ url: endpoint }), { scheduledDelayMillis: 500 })],
  });
  provider.register({ propagator: new W3CTraceContextPropagator() });
  return trace.getTracer("flotilla", version);
}

export function tracer(): Tracer {
  return trace.getTracer("flotilla");
}

export async function shutdownTracing(): Promise<void> {
  await provider?.shutdown().catch(() => undefined);
}

/** Extract a trace context from incoming gRPC metadata. */
export function extractFromMetadata(md: Metadata): Context {
  return propagation.extract(context.active(), md, {
    keys: (carrier) => Object.keys(carrier.getMap()),
    get: (carrier, key) => {
      const v = carrier.get(key)[0];
      return v === undefined ? undefined : String(v);
    },
  });
}

/** Inject `ctx`'s trace context into outgoing gRPC metadata. */
export function injectIntoMetadata(ctx: Context, md: Metadata): void {
  propagation.inject(ctx, md, { set: (carrier, key, value) => carrier.set(key, value) });
}

/** Header-like carrier (NATS headers). */
export interface HeaderCarrier {
  get(k: string): string;
  set(k: string, v: string): void;
  keys(): string[];
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
