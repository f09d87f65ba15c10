/**
 * Prometheus metrics per process: default process metrics, per-RPC counts and latency named and
 * labelled as go-grpc-prometheus does (what containerd exposes), and /metrics (also /v1/metrics, as
 * containerd) over HTTP.
 */
import * as http from "node:http";
import type { Registry, Metric } from "prom-client";
import { goCodeName } from "../grpc/status";

const RPC_LABELS = ["grpc_service", "grpc_method", "grpc_type"] as const;
const RPC_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

type RpcLabels = Record<(typeof RPC_LABELS)[number], string>;

/** go-grpc-prometheus's `grpc_type` for a method kind (ours says "bidi" for bidirectional streams). */
function grpcType(kind: string): string {
  return kind === "bidi" ? "bidi_stream" : kind;
}

/** One call's counts, taken when it starts (no lookup per message or at its end). */
export interface RpcTally {
  /** Request messages received (go-grpc-prometheus's grpc_server_msg_received_total). */
  received(n?: number): void;
  /** Response messages sent (grpc_server_msg_sent_total). */
  sent(n?: number): void;
  /** The call ended with gRPC status `code` after `seconds`. */
  done(code: number, seconds: number): void;
}

/** One method's calls: started, messages each way, finished by status code, and the latency histogram. */
class RpcSeries implements RpcTally {
  started = 0;
  msgReceived = 0;
  msgSent = 0;
  /** Calls finished, by code as go-grpc-prometheus spells it. */
  readonly codes = new Map<string, number>();
  /** Calls per bucket (not cumulative); the last slot counts calls above every bound. */
  readonly buckets = new Float64Array(RPC_BUCKETS.length + 1);
  sum = 0;
  count = 0;

  constructor(readonly labels: RpcLabels) {}

  received(n = 1): void {
    this.msgReceived += n;
  }

  sent(n = 1): void {
    this.msgSent += n;
  }

  done(code: number, seconds: number): void {
    const name = goCodeName(code);
    this.codes.set(name, (this.codes.get(name) ?? 0) + 1);
    let i = 0;
    while (i < RPC_BUCKETS.length && seconds > RPC_BUCKETS[i]!) i++;
    this.buckets[i]!++;
    this.sum += seconds;
    this.count++;
  }
}

interface MetricValue {
  labels: Record<string, string | number>;
  value: number;
  metricName?: string;
}

/**
 * The per-RPC counters and histogram, kept as plain numbers and turned into Prometheus series only when
 * scraped: prom-client's labelled observe validates and hashes the labels on every call, which is a
 * measurable part of a call's CPU. The exposition is go-grpc-prometheus's (`grpc_server_started_total`,
 * `grpc_server_handled_total`, `grpc_server_msg_received_total`, `grpc_server_msg_sent_total`,
 * `grpc_server_handling_seconds_{bucket,sum,count}`; `grpc_type` one of unary, client_stream,
 * server_stream, bidi_stream; `grpc_code` as Go's codes.Code String()).
 */
class RpcStats {
  private readonly series = new Map<string, RpcSeries>();

  /** The counters and the histogram, registered with `registry` as prom-client metrics. */
  register(registry: Registry): void {
    const perMethod = (name: string, help: string, value: (s: RpcSeries) => number): void => {
      const m = {
        name,
        help,
        type: "counter",
        aggregator: "sum",
        get: async () => ({ ...m, values: [...this.series.values()].map((s) => ({ labels: { ...s.labels }, value: value(s) })) }),
        reset: () => this.series.clear(),
      };
      registry.registerMetric(m as unknown as Metric);
    };
    perMethod("grpc_server_started_total", "Total number of RPCs started on the server.", (s) => s.started);
    const counter = {
      name: "grpc_server_handled_total",
      help: "Total number of RPCs completed on the server, regardless of success or failure.",
      type: "counter",
      aggregator: "sum",
      get: async () => ({ ...counter, values: this.counterValues() }),
      reset: () => this.series.clear(),
    };
    registry.registerMetric(counter as unknown as Metric);
    perMethod("grpc_server_msg_received_total", "Total number of RPC stream messages received on the server.", (s) => s.msgReceived);
    perMethod("grpc_server_msg_sent_total", "Total number of gRPC stream messages sent by the server.", (s) => s.msgSent);
    const histogram = {
      name: "grpc_server_handling_seconds",
      help: "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
      type: "histogram",
      aggregator: "sum",
      get: async () => ({ ...histogram, values: this.histogramValues(histogram.name) }),
      reset: () => this.series.clear(),
    };
    registry.registerMetric(histogram as unknown as Metric);
  }

  seriesOf(service: string, method: string, type: string): RpcSeries {
    const key = `${service}/${method}`;
    let s = this.series.get(key);
    if (!s) this.series.set(key, (s = new RpcSeries({ grpc_service: service, grpc_method: method, grpc_type: grpcType(type) })));
    return s;
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
  private reg?: Registry;
  private readonly rpc = new RpcStats();
  private server?: http.Server;

  constructor(readonly service: string) {}

  /**
   * The Prometheus registry, made on first use: by the /metrics endpoint when an address is configured,
   * or by a process registering metrics of its own. prom-client and its default collectors (some 40
   * modules, ~40 ms of CPU at start) are not loaded by a process nobody scrapes. The RPC counters are
   * plain numbers kept from the start either way, so a registry made later still reports every call.
   */
  get registry(): Registry {
    if (!this.reg) {
      const { Registry: PromRegistry, collectDefaultMetrics } = require("prom-client") as typeof import("prom-client");
      const reg = new PromRegistry();
      reg.setDefaultLabels({ flotilla_service: this.service });
      collectDefaultMetrics({ register: reg });
      this.rpc.register(reg);
      this.reg = reg;
    }
    return this.reg;
  }

  /** Count one RPC as started; its messages and its end are counted on what this returns (plain arithmetic, no label hashing). */
  rpcStarted(service: string, method: string, type: string): RpcTally {
    const s = this.rpc.seriesOf(service, method, type);
    s.started++;
    return s;
  }

  /** Count one finished RPC by its gRPC status code, and its duration (for a call not counted as started here). */
  rpcDone(service: string, method: string, type: string, code: number, seconds: number): void {
    this.rpc.seriesOf(service, method, type).done(code, seconds);
  }

  /** Serve /metrics on `address` (host:port); "" does nothing. Resolves with the bound port. */
  async listen(address: string): Promise<number | undefined> {
    if (!address) return undefined;
    // Made now, so the default collectors (GC, event loop) watch the process from the start of serving.
    const registry = this.registry;
    const idx = address.lastIndexOf(":");
    const host = idx > 0 ? address.slice(0, idx) : "127.0.0.1";
    const port = Number(address.slice(idx + 1));
    this.server = http.createServer((req, res) => {
      if (req.url !== "/metrics" && req.url !== "/v1/metrics") {
        res.writeHead(404).end();
        return;
      }
      registry.metrics().then(
        (body) => res.writeHead(200, { "content-type": registry.contentType }).end(body),
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
