/** gRPC adapter for containerd.services.leases.v1.Leases: validate, call the lease manager, convert. */
import { serviceHandlers, type ServiceHandlers } from "#libs/grpc/server";
import { errInvalidArgument } from "#libs/errdefs";
import { toTimestamp } from "#libs/proto";
import { LEASES_SERVICE } from "#libs/clients/leases";
import type { Lease, LeaseManager, LeaseResource } from "#libs/core/leases";
import type { Input } from "#libs/proto/types";

export { LEASES_SERVICE };

const leaseToProto = (l: Lease): Input["containerd.services.leases.v1.Lease"] => ({ id: l.id, created_at: toTimestamp(l.createdAt), labels: l.labels });

function resourceFromProto(r: { id?: string; type?: string } | null | undefined): LeaseResource {
  if (!r) throw errInvalidArgument("resource must be set");
  return { id: r.id ?? "", type: r.type ?? "" };
}

export function leasesHandlers(lm: LeaseManager): ServiceHandlers<typeof LEASES_SERVICE> {
  return serviceHandlers(LEASES_SERVICE, {
    Create: async (ctx, req) => ({ lease: leaseToProto(await lm.create(ctx, { id: req.id ?? "", labels: req.labels ?? {} })) }),
    Delete: async (ctx, req) => {
      await lm.delete(ctx, req.id ?? "", { sync: !!req.sync });
      return {};
    },
    List: async (ctx, req) => ({ leases: (await lm.list(ctx, req.filters ?? [])).map(leaseToProto) }),
    AddResource: async (ctx, req) => {
      await lm.addResource(ctx, req.id ?? "", resourceFromProto(req.resource));
      return {};
    },
    DeleteResource: async (ctx, req) => {
      await lm.deleteResource(ctx, req.id ?? "", resourceFromProto(req.resource));
      return {};
    },
    ListResources: async (ctx, req) => ({ resources: await lm.listResources(ctx, req.id ?? "") }),
  });
}
