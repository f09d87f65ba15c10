/**
 * A process's grpc.health.v1.Health over gRPC: what it says of one of its services ("" for the process
 * as a whole). The statuses are the protocol's numbers.
 */
import type { CallContext } from "../context";
import { RpcClient, type Channel } from "../grpc/client";

export const HEALTH_SERVICE = "grpc.health.v1.Health";

/** grpc.health.v1.HealthCheckResponse.ServingStatus; `HealthStatus[n]` is its name. */
export enum HealthStatus {
  UNKNOWN = 0,
  SERVING = 1,
  NOT_SERVING = 2,
  SERVICE_UNKNOWN = 3,
}

export class HealthClient {
  private readonly rpc: RpcClient<typeof HEALTH_SERVICE>;

  constructor(channel: Channel) {
    this.rpc = new RpcClient(channel, HEALTH_SERVICE);
  }

  /** The status of `service` as the process answers it (errors as the call's: Unavailable, DeadlineExceeded, NotFound). */
  async check(ctx: CallContext, service = ""): Promise<HealthStatus> {
    return Number((await this.rpc.unary(ctx, "Check", { service })).status ?? 0) as HealthStatus;
  }
}
