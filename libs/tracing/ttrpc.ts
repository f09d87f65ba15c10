/**
 * Trace context over ttrpc (the tasks process and its shims), loaded only by a process that exports
 * spans: outgoing requests carry the caller's `traceparent` in their metadata, and a server wraps each
 * call in a span that continues it, so the trace of a task call goes on into the shim.
 */
import { context, propagation, trace, type Context } from "@opentelemetry/api";
import { setOutgoingMetadata } from "../ttrpc/client";
import { statusFromError } from "../ttrpc/errors";
import type { CallWrapper } from "../ttrpc/server";
import type { Metadata } from "../ttrpc/wire";
import { SpanKind, SpanStatusCode, tracer, type Span } from "./index";

const setter = { set: (md: Metadata, k: string, v: string) => void (md[k] = [v]) };
const getter = { keys: (md: Metadata) => Object.keys(md), get: (md: Metadata, k: string) => md[k]?.[0] };

/**
 * `md` plus the active context's trace (a copy; `md` itself is left alone). A call that names its
 * trace itself keeps it: the active context may belong to another call (a shim's event queue, drained
 * under whichever call started it, sends each event with the trace of the call that caused it).
 */
function withTrace(md: Metadata): Metadata {
  if (md.traceparent || !trace.getSpan(context.active())) return md;
  const out = { ...md };
  propagation.inject(context.active(), out, setter);
  return out;
}

/** Send the active trace context with every ttrpc request of this process. */
export function propagateOverTtrpc(): void {
  setOutgoingMetadata(withTrace);
}

/** End `span` with a call's outcome (`rpc.grpc.status_code`, as ttrpc statuses are gRPC codes). */
function endWith(span: Span, err: unknown): void {
  const st = err === undefined ? { code: 0, message: "" } : statusFromError(err);
  span.setAttribute("rpc.grpc.status_code", st.code);
  if (st.code !== 0) span.setStatus({ code: SpanStatusCode.ERROR, message: st.message });
  span.end();
}

/** A server span per ttrpc call, the child of the caller's span, active while the handler runs. */
export const ttrpcServerSpans: CallWrapper = (ctx, run) => {
  const parent: Context = propagation.extract(context.active(), ctx.metadata, getter);
  const span = tracer().startSpan(`${ctx.service}/${ctx.method}`, {
    kind: SpanKind.SERVER,
    attributes: { "rpc.system": "ttrpc", "rpc.service": ctx.service, "rpc.method": ctx.method, ...(ctx.namespace ? { "containerd.namespace": ctx.namespace } : {}) },
  }, parent);
  return context.with(trace.setSpan(parent, span), run).then(
    (v) => {
      endWith(span, undefined);
      return v;
    },
    (e: unknown) => {
      endWith(span, e);
      throw e;
    },
  );
};
