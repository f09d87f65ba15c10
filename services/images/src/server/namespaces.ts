/** gRPC adapter for containerd.services.namespaces.v1.Namespaces: validate, call the store, convert. */
import { serviceHandlers, type ServiceHandlers } from "#libs/grpc/server";
import { namespaceToProto as toProto } from "../../public";
import type { Namespace, NamespaceStore } from "#libs/core/namespaces";
import { errInvalidArgument } from "#libs/errdefs";
import { NAMESPACES_SERVICE } from "#libs/clients/namespaces";
import type { Input } from "#libs/proto/types";

function fromProto(n: { name?: string; labels?: Record<string, string> } | null | undefined): Namespace {
  if (!n) throw errInvalidArgument("namespace must be set");
  return { name: n.name ?? "", labels: n.labels ?? {} };
}

export function namespacesHandlers(store: NamespaceStore): ServiceHandlers<typeof NAMESPACES_SERVICE> {
  return serviceHandlers(NAMESPACES_SERVICE, {
    Get: async (ctx, req) => ({ namespace: toProto(await store.get(ctx, req.name)) }),
    List: async (ctx) => ({ namespaces: (await store.list(ctx)).map(toProto) }),
    Create: async (ctx, req) => ({ namespace: toProto(await store.create(ctx, fromProto(req.namespace))) }),
    Update: async (ctx, req) => ({ namespace: toProto(await store.update(ctx, fromProto(req.namespace), req.update_mask?.paths ?? [])) }),
    Delete: async (ctx, req) => {
      await store.delete(ctx, req.name);
      return {};
    },
  });
}
