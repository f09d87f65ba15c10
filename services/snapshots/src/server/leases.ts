/**
 * The snapshot half of containerd.services.leases.v1.Leases resource calls, on the snapshots
 * process's own address (internal: the gateway routes the public Leases service to the images process).
 */
import type { ServiceHandlers } from "../../../../libs/grpc/server";
import { errInvalidArgument } from "../../../../libs/errdefs";
import type { SnapshotLeaseRecorder } from "../../../../libs/core/snapshots";

export const LEASES_SERVICE = "containerd.services.leases.v1.Leases";

function resource(r: { id?: string; type?: string } | null | undefined): { id: string; type: string } {
  if (!r) throw errInvalidArgument("resource must be set");
  return { id: r.id ?? "", type: r.type ?? "" };
}

export function snapshotLeasesHandlers(rec: SnapshotLeaseRecorder): ServiceHandlers {
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
    Delete: async (ctx, req) => {
      await rec.deleteLease(ctx, req.id);
      return {};
    },
  };
}
