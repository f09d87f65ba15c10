/** Plugin descriptions as containerd's introspection service reports them, and their filter adaptor. */
import { NOT_PRESENT, present, type Adaptor } from "../filters";
import type { Input } from "../proto/types";

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

export interface PluginInfo {
  /** e.g. `io.containerd.grpc.v1`, `io.containerd.snapshotter.v1` */
  type: string;
  id: string;
  requires?: string[];
  platforms?: Platform[];
  exports?: Record<string, string>;
  capabilities?: string[];
  /** Set when the plugin failed to initialise; ctr shows `skip` when the message contains "skip plugin". */
  initErr?: { code: number; message: string };
}

export const GRPC_PLUGIN = "io.containerd.grpc.v1";

export function hostPlatform(): Platform {
  const arch = ({ x64: "amd64", arm64: "arm64", arm: "arm", ia32: "386", ppc64: "ppc64le", s390x: "s390x", riscv64: "riscv64" } as Record<string, string>)[process.arch] ?? process.arch;
  return { os: process.platform, architecture: arch, variant: arch === "arm64" ? "v8" : "" };
}

export function pluginToProto(p: PluginInfo): Input["containerd.services.introspection.v1.Plugin"] {
  return {
    type: p.type,
    id: p.id,
    requires: p.requires ?? [],
    platforms: (p.platforms ?? []).map((x) => ({ os: x.os, architecture: x.architecture, variant: x.variant ?? "" })),
    exports: p.exports ?? {},
    capabilities: p.capabilities ?? [],
    init_err: p.initErr ? { code: p.initErr.code, message: p.initErr.message, details: [] } : null,
  };
}

/** Filter fields: `type`, `id`, `platforms` (os/arch[/variant] of any), `capabilities` (any). */
export function pluginAdaptor(p: Record<string, unknown>): Adaptor {
  return (fp) => {
    switch (fp[0]) {
      case "type": return p.type ? present(String(p.type)) : NOT_PRESENT;
      case "id": return p.id ? present(String(p.id)) : NOT_PRESENT;
      case "platforms": {
        const ps = (p.platforms as Platform[] | undefined) ?? [];
        return ps.length ? present(ps.map((x) => [x.os, x.architecture, x.variant].filter(Boolean).join("/")).join(",")) : NOT_PRESENT;
      }
      case "capabilities": {
        const cs = (p.capabilities as string[] | undefined) ?? [];
        return cs.length ? present(cs.join(",")) : NOT_PRESENT;
      }
      default: return NOT_PRESENT;
    }
  };
}
