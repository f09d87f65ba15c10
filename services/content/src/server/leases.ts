/**
 * The content process's part of containerd.services.leases.v1.Leases: AddResource, DeleteResource and
 * ListResources for the resources it holds (`content`, `ingests`). Served on the content process's own
 * address for the images process (which owns leases and GC); the gateway routes the public Leases
 * service to the images process, not here.
 */
import type { ServiceHandlers } from "../../../../libs/grpc/server";
import { errInvalidArgument } from "../../../../libs/errdefs";
import type { LeaseResource, LeaseResourceRecorder } from "../../../../libs/core/content";

export const LEASES_SERVICE = "containerd.services.leases.v1.Leases";

function resource(m: { id?: string; type?: string } | null | undefined): LeaseResource {
  if (!m) throw errInvalidArgument("resource must be set");
  return { id: m.id ?? "", type: m.type ?? "" };
}

export function leaseResourceHandlers(rec: LeaseResourceRecorder): ServiceHandlers {
  return {
    AddResource: async (ctx, req) => {
      await rec.addResource(ctx, req.id, resource(req.resource));
      return {};
    },
    DeleteResource: async (ctx, req) => {
      await rec.deleteResource(ctx, req.id, resource(req.resource));
      return {};
    },
    ListResources: async (ctx, req) => ({ resources: await rec.listResources(ctx, req.id) }),
    /** Lease deleted: forget what it held here (containerd's Delete of a lease, for this store's resources). */
    Delete: async (ctx, req) => {
      await rec.deleteLease(ctx, req.id);
      return {};
    },
  };
}
