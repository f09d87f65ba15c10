/**
 * OpenTelemetry tracing: a tracer provider per process, exporting over OTLP/HTTP when an endpoint is
 * configured, W3C trace context carried in gRPC metadata and NATS headers.
 */
import { context, propagation, trace, SpanKind, SpanStatusCode, type Context, type Span, type Tracer } from "@opentelemetry/api";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { BatchSpanProcessor, type SpanProcessor } from "@opentelemetry/sdk-trace-base";
import { NodeTracerProvider } from "@opentelemetry/sdk-trace-node";
import { ATTR_SERVICE_NAME, ATTR_SERVICE_VERSION } from "@opentelemetry/semantic-conventions";
import type { Metadata } from "@grpc/grpc-js";

export { SpanKind, SpanStatusCode };
export type { Context, Span, Tracer };

let provider: NodeTracerProvider | undefined;
let exporting = false;

/** True when spans leave this process (an OTLP endpoint is configured). */
export function tracingExported(): boolean {
  return exporting;
}

/** Set up tracing for this process. Without an endpoint, spans are still created (for propagation) but not exported. */
export function initTracing(service: string, endpoint: string, version = "0.1.0"): Tracer {
  const processors: SpanProcessor[] = [];
  exporting = Boolean(endpoint);
  if (endpoint) {
    processors.push(new BatchSpanProcessor(new OTLPTraceExporter({ url: endpoint }), { scheduledDelayMillis: 500 }));
  }
  provider = new NodeTracerProvider({
    resource: resourceFromAttributes({ [ATTR_SERVICE_NAME]: `flotilla-${service}`, [ATTR_SERVICE_VERSION]: version }),
    spanProcessors: processors,
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
