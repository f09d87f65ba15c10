/**
 * One process's introspection service over gRPC (containerd.services.introspection.v1.Introspection):
 * the plugins it loaded, as our PluginInfo. Asked of an owning process directly, it says what that
 * process runs (e.g. which snapshotters the snapshots process has).
 */
import type { CallContext } from "../context";
import { RpcClient, type Channel } from "../grpc/client";
import type { Msg } from "../grpc/server";
import type { PluginInfo } from "../service/plugins";

/** A wire `containerd.services.introspection.v1.Plugin` as a PluginInfo (the inverse of pluginToProto). */
export function pluginFromProto(m: Msg): PluginInfo {
  const p: PluginInfo = {
    type: String(m.type ?? ""),
    id: String(m.id ?? ""),
    requires: [...((m.requires as string[] | undefined) ?? [])],
    platforms: ((m.platforms as Msg[] | undefined) ?? []).map((x) => ({ os: String(x.os ?? ""), architecture: String(x.architecture ?? ""), variant: String(x.variant ?? "") })),
    exports: { ...((m.exports as Record<string, string> | undefined) ?? {}) },
    capabilities: [...((m.capabilities as string[] | undefined) ?? [])],
  };
  const err = m.init_err as Msg | null | undefined;
  if (err && err.code) p.initErr = { code: Number(err.code), message: String(err.message ?? "") };
  return p;
}

export const INTROSPECTION_SERVICE = "containerd.services.introspection.v1.Introspection";

export class IntrospectionProxy {
  private readonly rpc: RpcClient<typeof INTROSPECTION_SERVICE>;

  constructor(channel: Channel) {
    this.rpc = new RpcClient(channel, INTROSPECTION_SERVICE);
  }

  /** The plugins matching `filters` (containerd's filter syntax, e.g. `type==io.containerd.snapshotter.v1`). */
  async plugins(ctx: CallContext, filters: readonly string[] = []): Promise<PluginInfo[]> {
    return (((await this.rpc.unary(ctx, "Plugins", { filters: [...filters] })).plugins as Msg[] | undefined) ?? []).map(pluginFromProto);
  }
}
