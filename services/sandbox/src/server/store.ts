/** gRPC adapter for containerd.services.sandbox.v1.Store: validate, call the store, convert. */
import { serviceHandlers, type ServiceHandlers } from "#libs/grpc/server";
import { errInvalidArgument } from "#libs/errdefs";
import { sandboxFromProto, sandboxToProto, SANDBOX_STORE_SERVICE } from "#libs/clients/sandbox";
import type { SandboxStore } from "#libs/core/sandbox";

export { SANDBOX_STORE_SERVICE };

export function storeHandlers(store: SandboxStore): ServiceHandlers<typeof SANDBOX_STORE_SERVICE> {
  const required = (m: unknown): Record<string, unknown> => {
    if (!m) throw errInvalidArgument("sandbox must be set");
    return m as Record<string, unknown>;
  };
  return serviceHandlers(SANDBOX_STORE_SERVICE, {
    Create: async (ctx, req) => ({ sandbox: sandboxToProto(await store.create(ctx, sandboxFromProto(required(req.sandbox)))) }),
    Update: async (ctx, req) => ({ sandbox: sandboxToProto(await store.update(ctx, sandboxFromProto(required(req.sandbox)), req.fields ?? [])) }),
    Get: async (ctx, req) => ({ sandbox: sandboxToProto(await store.get(ctx, req.sandbox_id)) }),
    List: async (ctx, req) => ({ list: (await store.list(ctx, req.filters ?? [])).map(sandboxToProto) }),
    Delete: async (ctx, req) => {
      await store.delete(ctx, req.sandbox_id);
      return {};
    },
  });
}
