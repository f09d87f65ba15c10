/** containerd.services.containers.v1.Containers as a thin adapter over a ContainerStore. */
import { errInvalidArgument } from "#libs/errdefs";
import { serviceHandlers, type ServiceHandlers } from "#libs/grpc/server";
import { containerInputFromProto, containerToProto } from "#libs/clients/containers";
import type { ContainerStore } from "#libs/core/containers";

export const CONTAINERS_SERVICE = "containerd.services.containers.v1.Containers";

export function containersHandlers(store: ContainerStore): ServiceHandlers<typeof CONTAINERS_SERVICE> {
  return serviceHandlers(CONTAINERS_SERVICE, {
    Get: async (ctx, req) => ({ container: containerToProto(await store.get(ctx, String(req.id ?? ""))) }),
    List: async (ctx, req) => ({ containers: (await store.list(ctx, req.filters ?? [])).map(containerToProto) }),
    ListStream: async (ctx, req, send) => {
      for (const c of await store.list(ctx, req.filters ?? [])) await send({ container: containerToProto(c) });
    },
    Create: async (ctx, req) => {
      if (!req.container) throw errInvalidArgument("container must be set");
      return { container: containerToProto(await store.create(ctx, containerInputFromProto(req.container))) };
    },
    Update: async (ctx, req) => {
      if (!req.container || !req.container.id) throw errInvalidArgument("Container.ID required");
      const paths = (req.update_mask?.paths as string[] | undefined) ?? [];
      return { container: containerToProto(await store.update(ctx, containerInputFromProto(req.container), paths)) };
    },
    Delete: async (ctx, req) => {
      await store.delete(ctx, String(req.id ?? ""));
      return {};
    },
  });
}
