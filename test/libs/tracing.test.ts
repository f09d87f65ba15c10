import * as assert from "node:assert/strict";
import { test } from "node:test";
import { Metadata } from "@grpc/grpc-js";
import { trace } from "@opentelemetry/api";
import { extractFromMetadata, initTracing, injectIntoMetadata, tracer } from "../../libs/tracing";

test("without an OTLP endpoint, spans are not recorded but the trace context still flows", () => {
  initTracing("tracing-test", "");
  // A call with no incoming trace starts one.
  const root = tracer().startSpan("a/b", {}, extractFromMetadata(new Metadata()));
  assert.equal(root.isRecording(), false);
  const rc = root.spanContext();
  assert.match(rc.traceId, /^[0-9a-f]{32}$/);
  assert.match(rc.spanId, /^[0-9a-f]{16}$/);
  const out = new Metadata();
  injectIntoMetadata(trace.setSpan(extractFromMetadata(new Metadata()), root), out);
  assert.equal(out.get("traceparent")[0], `00-${rc.traceId}-${rc.spanId}-00`);

  // A call that carries trace context continues that trace, with a span id of its own.
  const incoming = new Metadata();
  incoming.set("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
  const child = tracer().startSpan("c/d", {}, extractFromMetadata(incoming));
  const cc = child.spanContext();
  assert.equal(cc.traceId, "0af7651916cd43dd8448eb211c80319c");
  assert.notEqual(cc.spanId, "b7ad6b7169203331");
  assert.equal(cc.traceFlags, 1, "the caller's sampling decision is kept");
  assert.notEqual(tracer().startSpan("e/f").spanContext().traceId, rc.traceId, "separate calls, separate traces");
});
