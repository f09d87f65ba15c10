/**
 * Leases over gRPC (containerd.services.leases.v1.Leases):
 * - `LeaseManagerProxy`: the public lease API (served by the images process); callers cannot tell it
 *   from the local manager.
 * - `LeaseResourceHolderProxy`: the lease records an owning process (content, snapshots) keeps, read and
 *   written by the lease manager over the same service on that process's own address.
 * Errors arrive as native errdefs classes (the RpcClient maps them).
 */
import type { CallContext } from "../context";
import { RpcClient, type Channel } from "../grpc/client";
import type { Msg } from "../grpc/server";
import { fromTimestamp } from "../proto";
import type { Lease, LeaseCreateOptions, LeaseDeleteOptions, LeaseManager, LeaseResource, LeaseResourceHolder } from "../core/leases";

export const LEASES_SERVICE = "containerd.services.leases.v1.Leases";

export function leaseFromProto(m: Msg | null | undefined): Lease {
  return {
    id: String(m?.id ?? ""),
    createdAt: fromTimestamp(m?.created_at) ?? new Date(0),
    labels: (m?.labels as Record<string, string> | undefined) ?? {},
  };
}

const resourcesFromProto = (res: Msg): LeaseResource[] =>
  ((res.resources as Msg[] | undefined) ?? []).map((r) => ({ id: String(r.id ?? ""), type: String(r.type ?? "") }));

export class LeaseManagerProxy implements LeaseManager {
  private readonly rpc: RpcClient<typeof LEASES_SERVICE>;

  constructor(channel: Channel) {
    this.rpc = new RpcClient(channel, LEASES_SERVICE);
  }

  async create(ctx: CallContext, opts: LeaseCreateOptions): Promise<Lease> {
    return leaseFromProto((await this.rpc.unary(ctx, "Create", { id: opts.id ?? "", labels: opts.labels ?? {} })).lease);
  }

  async delete(ctx: CallContext, id: string, opts: LeaseDeleteOptions = {}): Promise<void> {
    await this.rpc.unary(ctx, "Delete", { id, sync: !!opts.sync });
  }

  async list(ctx: CallContext, filters: readonly string[] = []): Promise<Lease[]> {
    return (((await this.rpc.unary(ctx, "List", { filters: [...filters] })).leases as Msg[] | undefined) ?? []).map(leaseFromProto);
  }

  async addResource(ctx: CallContext, id: string, resource: LeaseResource): Promise<void> {
    await this.rpc.unary(ctx, "AddResource", { id, resource });
  }

  async deleteResource(ctx: CallContext, id: string, resource: LeaseResource): Promise<void> {
    await this.rpc.unary(ctx, "DeleteResource", { id, resource });
  }

  async listResources(ctx: CallContext, id: string): Promise<LeaseResource[]> {
    return resourcesFromProto(await this.rpc.unary(ctx, "ListResources", { id }));
  }
}

/** The lease records of one owning process (content or snapshots), on that process's address. */
export class LeaseResourceHolderProxy implements LeaseResourceHolder {
  private readonly rpc: RpcClient<typeof LEASES_SERVICE>;

  constructor(channel: Channel) {
    this.rpc = new RpcClient(channel, LEASES_SERVICE);
  }

  async addResource(ctx: CallContext, lease: string, resource: LeaseResource): Promise<void> {
    await this.rpc.unary(ctx, "AddResource", { id: lease, resource });
  }

  async deleteResource(ctx: CallContext, lease: string, resource: LeaseResource): Promise<void> {
    await this.rpc.unary(ctx, "DeleteResource", { id: lease, resource });
  }

  async listResources(ctx: CallContext, lease: string): Promise<LeaseResource[]> {
    return resourcesFromProto(await this.rpc.unary(ctx, "ListResources", { id: lease }));
  }

  async deleteLease(ctx: CallContext, lease: string): Promise<void> {
    await this.rpc.unary(ctx, "Delete", { id: lease });
  }
}
