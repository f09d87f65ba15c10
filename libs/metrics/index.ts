/** Prometheus metrics per process: default process metrics, per-RPC counts and latency, and /metrics over HTTP. */
import * as http from "node:http";
import { Counter, Histogram, Registry, collectDefaultMetrics } from "prom-client";

export class Metrics {
  readonly registry = new Registry();
  readonly rpcHandled: Counter<"grpc_service" | "grpc_method" | "grpc_type" | "grpc_code">;
  readonly rpcSeconds: Histogram<"grpc_service" | "grpc_method" | "grpc_type">;
  private server?: http.Server;
  private readonly handled = new Map<string, { inc(): void }>();
  private readonly seconds = new Map<string, { observe(v: number): void }>();

  constructor(readonly service: string) {
    this.registry.setDefaultLabels({ flotilla_service: service });
    collectDefaultMetrics({ register: this.registry });
    this.rpcHandled = new Counter({
      name: "grpc_server_handled_total",
      help: "RPCs completed on the server, by method and status code.",
      labelNames: ["grpc_service", "grpc_method", "grpc_type", "grpc_code"],
      registers: [this.registry],
    });
    this.rpcSeconds = new Histogram({
      name: "grpc_server_handling_seconds",
      help: "Time to handle an RPC on the server, in seconds.",
      labelNames: ["grpc_service", "grpc_method", "grpc_type"],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers: [this.registry],
    });
  }

  /** Count one finished RPC and its duration (label children are cached: this runs on every call). */
  rpcDone(service: string, method: string, type: string, code: string, seconds: number): void {
    const k = `${service}/${method}`;
    let h = this.handled.get(`${k}/${code}`);
    if (!h) {
      h = this.rpcHandled.labels({ grpc_service: service, grpc_method: method, grpc_type: type, grpc_code: code });
      this.handled.set(`${k}/${code}`, h);
    }
    h.inc();
    let o = this.seconds.get(k);
    if (!o) {
      o = this.rpcSeconds.labels({ grpc_service: service, grpc_method: method, grpc_type: type });
      this.seconds.set(k, o);
    }
    o.observe(seconds);
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
