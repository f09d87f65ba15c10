/**
 * The Kubernetes CRI over gRPC (runtime.v1 RuntimeService and ImageService), as the kubelet and crictl
 * call it on the containerd socket: typed clients for tools and tests that speak CRI to a Flotilla stack.
 */
import type { CallContext } from "../context";
import { RpcClient, type Channel } from "../grpc/client";

export const CRI_RUNTIME_SERVICE = "runtime.v1.RuntimeService";
export const CRI_IMAGE_SERVICE = "runtime.v1.ImageService";

export class CriClient {
  readonly runtime: RpcClient<typeof CRI_RUNTIME_SERVICE>;
  readonly images: RpcClient<typeof CRI_IMAGE_SERVICE>;
  constructor(channel: Channel) {
    this.runtime = new RpcClient(channel, CRI_RUNTIME_SERVICE);
    this.images = new RpcClient(channel, CRI_IMAGE_SERVICE);
  }
  /** Resolve once the CRI answers (a connection is up), or reject after `ms`. */
  waitForReady(ms: number): Promise<void> {
    return this.runtime.waitForReady(ms);
  }
  async version(ctx: CallContext): Promise<{ runtimeName: string; runtimeVersion: string; runtimeApiVersion: string }> {
    const v = await this.runtime.unary(ctx, "Version", { version: "v1" });
    return { runtimeName: v.runtime_name, runtimeVersion: v.runtime_version, runtimeApiVersion: v.runtime_api_version };
  }
}
