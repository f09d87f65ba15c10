/**
 * Helpers of the gateway tests.
 */
import * as http from "node:http";
import type { ServiceName } from "#libs/config";
import type { Stack } from "../harness";

/** The sum of a metric's samples in a process's Prometheus metrics whose labels include every one of `labels`. */
export function metric(s: Stack, svc: ServiceName, name: string, labels: string[] = []): Promise<number> {
  return new Promise((resolve, reject) => {
    http
      .get(`http://${s.metricsAddress(svc)}/metrics`, (res) => {
        let body = "";
        res.on("data", (c: Buffer) => (body += c.toString()));
        res.on("end", () => {
          let n = 0;
          for (const line of body.split("\n")) {
            if ((line.startsWith(`${name}{`) || line.startsWith(`${name} `)) && labels.every((l) => line.includes(l))) n += Number(line.slice(line.lastIndexOf(" ") + 1));
          }
          resolve(n);
        });
      })
      .on("error", reject);
  });
}

/** Calls of `service/method` the process's server has handled, from its Prometheus metrics. */
export function handled(s: Stack, svc: ServiceName, service: string, method: string): Promise<number> {
  return metric(s, svc, "grpc_server_handled_total", [`grpc_service="${service}"`, `grpc_method="${method}"`]);
}

/**
 * Waits for the collector's startup pass: until it has run, a blob written with no lease (as
 * `ctr content ingest` writes one) may be collected before the next call sees it, in containerd too.
 */
export async function startupCollected(s: Stack): Promise<void> {
  for (let i = 0; i < 200 && (await metric(s, "images", "flotilla_gc_passes_total")) === 0; i++) await new Promise((r) => setTimeout(r, 50));
}
