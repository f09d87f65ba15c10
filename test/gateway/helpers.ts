/**
 * Helpers of the gateway tests.
 */
import * as http from "node:http";
import type { ServiceName } from "../../libs/config";
import type { Stack } from "../harness";

/** Calls of `service/method` the process's server has handled, from its Prometheus metrics. */
export function handled(s: Stack, svc: ServiceName, service: string, method: string): Promise<number> {
  return new Promise((resolve, reject) => {
    http
      .get(`http://${s.metricsAddress(svc)}/metrics`, (res) => {
        let body = "";
        res.on("data", (c: Buffer) => (body += c.toString()));
        res.on("end", () => {
          let n = 0;
          for (const line of body.split("\n")) {
            if (line.startsWith("grpc_server_handled_total{") && line.includes(`grpc_service="${service}"`) && line.includes(`grpc_method="${method}"`)) n += Number(line.slice(line.lastIndexOf(" ") + 1));
          }
          resolve(n);
        });
      })
      .on("error", reject);
  });
}
