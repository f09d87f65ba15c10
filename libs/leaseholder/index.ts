/**
 * The lease-record half of containerd.services.leases.v1.Leases, as each process that owns data
 * (content, snapshots) serves it on its own address: AddResource, DeleteResource, ListResources, and
 * Delete (the lease is gone: forget what it held there). The images process, which owns leases and
 * garbage collection, calls these through LeaseResourceHolderProxy; the gateway routes the public
 * Leases service to the images process, never here.
 */
import { serviceHandlers, type ServiceHandlers } from "../grpc/server";
import { errInvalidArgument } from "../errdefs";
import type { LeaseResource, LeaseResourceHolder } from "../core/leases";

import { LEASES_SERVICE } from "../clients/leases";

export { LEASES_SERVICE };

function resource(m: { id?: string; type?: string } | null | undefined): LeaseResource {
  if (!m) throw errInvalidArgument("resource must be set");
  return { id: m.id ?? "", type: m.type ?? "" };
}

/** Handlers for `holder`, the process's own lease records (which validates the resource types it keeps). */
export function leaseHolderHandlers(holder: LeaseResourceHolder): ServiceHandlers<typeof LEASES_SERVICE> {
  return serviceHandlers(LEASES_SERVICE, {
    AddResource: async (ctx, req) => {
      await holder.addResource(ctx, req.id, resource(req.resource));
      return {};
    },
    DeleteResource: async (ctx, req) => {
      await holder.deleteResource(ctx, req.id, resource(req.resource));
      return {};
    },
    ListResources: async (ctx, req) => ({ resources: await holder.listResources(ctx, req.id) }),
    Delete: async (ctx, req) => {
      await holder.deleteLease(ctx, req.id);
      return {};
    },
  });
}
