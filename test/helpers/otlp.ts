/**
 * A small OTLP/HTTP trace receiver on loopback, collecting every span it is sent, as OTLP protobuf
 * (`application/x-protobuf`, OTEL's default) or OTLP JSON (`application/json`).
 */
import * as http from "node:http";
import * as protobuf from "protobufjs";

export type AttributeValue = string | number | boolean;

export interface ReceivedSpan {
  service: string;
  traceId: string;
  spanId: string;
  parentSpanId: string;
  name: string;
  kind: number;
  attributes: Record<string, AttributeValue>;
  /** The content type of the request that brought it. */
  contentType: string;
}

/** The part of opentelemetry/proto/collector/trace/v1 an export request needs (field numbers are OTLP's). */
const OTLP_PROTO = `
syntax = "proto3";
package otlp;
message AnyValue { oneof value { string string_value = 1; bool bool_value = 2; int64 int_value = 3; double double_value = 4; ArrayValue array_value = 5; } }
message ArrayValue { repeated AnyValue values = 1; }
message KeyValue { string key = 1; AnyValue value = 2; }
message Resource { repeated KeyValue attributes = 1; }
message Span {
  bytes trace_id = 1; bytes span_id = 2; string trace_state = 3; bytes parent_span_id = 4; string name = 5; int32 kind = 6;
  fixed64 start_time_unix_nano = 7; fixed64 end_time_unix_nano = 8; repeated KeyValue attributes = 9;
}
message ScopeSpans { repeated Span spans = 2; }
message ResourceSpans { Resource resource = 1; repeated ScopeSpans scope_spans = 2; }
message ExportTraceServiceRequest { repeated ResourceSpans resource_spans = 1; }
`;
const ExportRequest = protobuf.parse(OTLP_PROTO, { keepCase: false }).root.lookupType("otlp.ExportTraceServiceRequest");

interface JsonKeyValue {
  key: string;
  value?: { stringValue?: string; boolValue?: boolean; intValue?: string | number; doubleValue?: number; arrayValue?: unknown };
}

function attributes(kvs: JsonKeyValue[] | undefined): Record<string, AttributeValue> {
  const out: Record<string, AttributeValue> = {};
  for (const kv of kvs ?? []) {
    const v = kv.value ?? {};
    if (v.stringValue !== undefined) out[kv.key] = v.stringValue;
    else if (v.boolValue !== undefined) out[kv.key] = v.boolValue;
    else if (v.intValue !== undefined) out[kv.key] = Number(v.intValue);
    else if (v.doubleValue !== undefined) out[kv.key] = v.doubleValue;
  }
  return out;
}

/** The export request as OTLP JSON's shape (ids in hex), whichever encoding it came in. */
function decode(contentType: string, body: Buffer): { resourceSpans?: { resource?: { attributes?: JsonKeyValue[] }; scopeSpans?: { spans?: Record<string, unknown>[] }[] }[] } {
  if (contentType.includes("json")) return JSON.parse(body.toString("utf8"));
  const hex = (b: unknown): string => (b instanceof Uint8Array ? Buffer.from(b).toString("hex") : "");
  const msg = ExportRequest.toObject(ExportRequest.decode(body), { longs: String, defaults: false, oneofs: false }) as { resourceSpans?: { resource?: { attributes?: JsonKeyValue[] }; scopeSpans?: { spans?: Record<string, unknown>[] }[] }[] };
  for (const rs of msg.resourceSpans ?? []) {
    for (const ss of rs.scopeSpans ?? []) {
      for (const s of ss.spans ?? []) {
        s.traceId = hex(s.traceId);
        s.spanId = hex(s.spanId);
        s.parentSpanId = hex(s.parentSpanId);
      }
    }
  }
  return msg;
}

export async function startOtlpReceiver(): Promise<{ endpoint: string; spans: ReceivedSpan[]; close(): Promise<void> }> {
  const spans: ReceivedSpan[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    const contentType = String(req.headers["content-type"] ?? "");
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      try {
        const body = decode(contentType, Buffer.concat(chunks));
        for (const rs of body.resourceSpans ?? []) {
          const service = String(attributes(rs.resource?.attributes)["service.name"] ?? "");
          for (const ss of rs.scopeSpans ?? []) {
            for (const s of ss.spans ?? []) {
              spans.push({
                service,
                traceId: String(s.traceId ?? ""),
                spanId: String(s.spanId ?? ""),
                parentSpanId: String(s.parentSpanId ?? ""),
                name: String(s.name ?? ""),
                kind: Number(s.kind ?? 0),
                attributes: attributes(s.attributes as JsonKeyValue[] | undefined),
                contentType,
              });
            }
          }
        }
        if (contentType.includes("json")) res.writeHead(200, { "content-type": "application/json" }).end("{}");
        else res.writeHead(200, { "content-type": "application/x-protobuf" }).end();
      } catch {
        res.writeHead(400).end();
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const port = (server.address() as { port: number }).port;
  return {
    endpoint: `http://127.0.0.1:${port}/v1/traces`,
    spans,
    close: () => new Promise((r) => server.close(() => r())),
  };
}
