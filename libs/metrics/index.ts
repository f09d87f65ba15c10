/**
 * Prometheus metrics per process: default process metrics, per-RPC counts and latency named and
 * labelled as go-grpc-prometheus does (what containerd exposes), and /metrics (also /v1/metrics, as
 * containerd) over HTTP.
 */
import * as http from "node:http";
import { Registry, collectDefaultMetrics, type Metric } from "prom-client";
import { goCodeName } from "../grpc/status";

const RPC_LABELS = ["grpc_service", "grpc_method", "grpc_type"] as const;
const RPC_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

type RpcLabels = Record<(typeof RPC_LABELS)[number], string>;

/** go-grpc-prometheus's `grpc_type` for a method kind (ours says "bidi" for bidirectional streams). */
function grpcType(kind: string): string {
  return kind === "bidi" ? "bidi_stream" : kind;
}

/** One method's calls: counts by status code and the latency histogram. */
interface RpcSeries {
  labels: RpcLabels;
  /** Calls started (counted when they arrive). */
  started: number;
  /** Calls finished, by code as go-grpc-prometheus spells it. */
  codes: Map<string, number>;
  /** Calls per bucket (not cumulative); the last slot counts calls above every bound. */
  buckets: Float64Array;
  sum: number;
  count: number;
}

interface MetricValue {
  labels: Record<string, string | number>;
  value: number;
  metricName?: string;
}

/**
 * The per-RPC counter and histogram, kept as plain numbers and turned into Prometheus series only when
 * scraped: prom-client's labelled observe validates and hashes the labels on every call, which is a
 * measurable part of a call's CPU. The exposition is go-grpc-prometheus's (`grpc_server_started_total`,
 * `grpc_server_handled_total`, `grpc_server_handling_seconds_{bucket,sum,count}`; `grpc_type` one of
 * unary, client_stream, server_stream, bidi_stream; `grpc_code` as Go's codes.Code String()).
 */
class RpcStats {
  private readonly series = new Map<string, RpcSeries>();

  /** The counter and the histogram, registered with `registry` as prom-client metrics. */
  register(registry: Registry): void {
    const started = {
      name: "grpc_server_started_total",
      help: "Total number of RPCs started on the server.",
      type: "counter",
      aggregator: "sum",
      get: async () => ({ ...started, values: [...this.series.values()].map((s) => ({ labels: { ...s.labels }, value: s.started })) }),
      reset: () => this.series.clear(),
    };
    const counter = {
      name: "grpc_server_handled_total",
      help: "Total number of RPCs completed on the server, regardless of success or failure.",
      type: "counter",
      aggregator: "sum",
      get: async () => ({ ...counter, values: this.counterValues() }),
      reset: () => this.series.clear(),
    };
    const histogram = {
      name: "grpc_server_handling_seconds",
      help: "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
      type: "histogram",
      aggregator: "sum",
      get: async () => ({ ...histogram, values: this.histogramValues(histogram.name) }),
      reset: () => this.series.clear(),
    };
    registry.registerMetric(started as unknown as Metric);
    registry.registerMetric(counter as unknown as Metric);
    registry.registerMetric(histogram as unknown as Metric);
  }

  private seriesOf(service: string, method: string, type: string): RpcSeries {
    const key = `${service}/${method}`;
    let s = this.series.get(key);
    if (!s) {
      s = { labels: { grpc_service: service, grpc_method: method, grpc_type: grpcType(type) }, started: 0, codes: new Map(), buckets: new Float64Array(RPC_BUCKETS.length + 1), sum: 0, count: 0 };
      this.series.set(key, s);
    }
    return s;
  }

  start(service: string, method: string, type: string): void {
    this.seriesOf(service, method, type).started++;
  }

  record(service: string, method: string, type: string, code: number, seconds: number): void {
    const s = this.seriesOf(service, method, type);
    const name = goCodeName(code);
    s.codes.set(name, (s.codes.get(name) ?? 0) + 1);
    let i = 0;
    while (i < RPC_BUCKETS.length && seconds > RPC_BUCKETS[i]!) i++;
    s.buckets[i]!++;
    s.sum += seconds;
    s.count++;
  }

  private counterValues(): MetricValue[] {
    const out: MetricValue[] = [];
    for (const s of this.series.values()) for (const [code, n] of s.codes) out.push({ labels: { ...s.labels, grpc_code: code }, value: n });
    return out;
  }

  private histogramValues(name: string): MetricValue[] {
    const out: MetricValue[] = [];
    for (const s of this.series.values()) {
      let acc = 0;
      RPC_BUCKETS.forEach((le, i) => {
        acc += s.buckets[i]!;
        out.push({ labels: { le, ...s.labels }, value: acc, metricName: `${name}_bucket` });
      });
      out.push({ labels: { le: "+Inf", ...s.labels }, value: s.count, metricName: `${name}_bucket` });
      out.push({ labels: { ...s.labels }, value: s.sum, metricName: `${name}_sum` });
      out.push({ labels: { ...s.labels }, value: s.count, metricName: `${name}_count` });
    }
    return out;
  }
}

export class Metrics {
  readonly registry = new Registry();
  private readonly rpc = new RpcStats();
  private server?: http.Server;

  constructor(readonly service: string) {
    this.registry.setDefaultLabels({ flotilla_service: service });
    collectDefaultMetrics({ register: this.registry });
    this.rpc.register(this.registry);
  }

  /** Count one RPC as started (go-grpc-prometheus's grpc_server_started_total). */
  rpcStarted(service: string, method: string, type: string): void {
    this.rpc.start(service, method, type);
  }

  /** Count one finished RPC by its gRPC status code, and its duration (this runs on every call: plain arithmetic, no label hashing). */
  rpcDone(service: string, method: string, type: string, code: number, seconds: number): void {
    this.rpc.record(service, method, type, code, seconds);
  }

  /** Serve /metrics on `address` (host:port); "" does nothing. Resolves with the bound port. */
  async listen(address: string): Promise<number | undefined> {
    if (!address) return undefined;
    const idx = address.lastIndexOf(":");
    const host = idx > 0 ? address.slice(0, idx) : "127.0.0.1";
    const port = Number(address.slice(idx + 1));
    this.server = http.createServer((req, res) => {
      if (req.url !== "/metrics" && req.url !== "/v1/metrics") {
        res.writeHead(404).end();
        return;
      }
      this.registry.metrics().then(
        (body) => res.writeHead(200, { "content-type": this.registry.contentType }).end(body),
        (err: Error) => res.writeHead(500).end(err.message),
      );
    });
    await new Promise<void>((resolve, reject) => {
      this.server!.once("error", reject);
      this.server!.listen(port, host.replace(/^\[|\]$/g, ""), () => resolve());
    });
    const a = this.server.address();
    return typeof a === "object" && a ? a.port : undefined;
  }

  async close(): Promise<void> {
    const s = this.server;
    if (s) await new Promise<void>((r) => s.close(() => r()));
  }
}

/** One series of a gauge family. */
export interface GaugeSample {
  labels: Record<string, string>;
  value: number;
}

/**
 * Gauge families whose series are read at scrape time by one `collect` (family name -> series): every
 * family of one scrape shares one collection (it is reused for `reuseMs`, and while it runs).
 */
export function registerGaugeFamilies(registry: Registry, families: readonly { name: string; help: string }[], collect: () => Promise<Map<string, GaugeSample[]>>, reuseMs = 1000): void {
  let last: { at: number; result: Promise<Map<string, GaugeSample[]>> } | undefined;
  const current = (): Promise<Map<string, GaugeSample[]>> => {
    if (!last || Date.now() - last.at > reuseMs) last = { at: Date.now(), result: collect().catch(() => new Map()) };
    return last.result;
  };
  for (const f of families) {
    const metric = {
      name: f.name,
      help: f.help,
      type: "gauge",
      aggregator: "sum",
      get: async () => ({ ...metric, values: ((await current()).get(f.name) ?? []).map((s) => ({ labels: s.labels, value: s.value })) }),
      reset: () => undefined,
    };
    registry.registerMetric(metric as unknown as Metric);
  }
}
