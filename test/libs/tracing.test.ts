import * as assert from "node:assert/strict";
import { test } from "node:test";
import { trace } from "@opentelemetry/api";
import { extractFromHeaders, initTracing, injectIntoHeaders, tracer, type HeaderCarrier } from "#libs/tracing";

/** Request headers as a carrier (what gRPC metadata and NATS headers both are). */
function headers(init: Record<string, string> = {}): HeaderCarrier & { map: Map<string, string> } {
  const map = new Map(Object.entries(init));
  return { map, get: (k) => map.get(k) ?? "", set: (k, v) => void map.set(k, v), keys: () => [...map.keys()] };
}

test("without an OTLP endpoint, spans are not recorded but the trace context still flows", () => {
  initTracing("tracing-test", "");
  // A call with no incoming trace starts one.
  const root = tracer().startSpan("a/b", {}, extractFromHeaders(headers()));
  assert.equal(root.isRecording(), false);
  const rc = root.spanContext();
  assert.match(rc.traceId, /^[0-9a-f]{32}$/);
  assert.match(rc.spanId, /^[0-9a-f]{16}$/);
  const out = headers();
  injectIntoHeaders(trace.setSpan(extractFromHeaders(headers()), root), out);
  assert.equal(out.get("traceparent"), `00-${rc.traceId}-${rc.spanId}-00`);

  // A call that carries trace context continues that trace, with a span id of its own.
  const incoming = headers({ traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" });
  const child = tracer().startSpan("c/d", {}, extractFromHeaders(incoming));
  const cc = child.spanContext();
  assert.equal(cc.traceId, "0af7651916cd43dd8448eb211c80319c");
  assert.notEqual(cc.spanId, "b7ad6b7169203331");
  assert.equal(cc.traceFlags, 1, "the caller's sampling decision is kept");
  assert.notEqual(tracer().startSpan("e/f").spanContext().traceId, rc.traceId, "separate calls, separate traces");
});
