/** Version, Status (runtime and network conditions) and UpdateRuntimeConfig, answered as containerd's CRI answers them. */
import * as fs from "node:fs";
import * as path from "node:path";
import type { CriDeps, RuntimeRpc } from "./parts";

/** The containerd release whose CRI Flotilla's answers follow. */
export const CRI_RUNTIME_VERSION = "v1.6.20+flotilla.0.1.0";

export interface RuntimeInfo {
  version: RuntimeRpc<"Version">;
  status: RuntimeRpc<"Status">;
  updateRuntimeConfig: RuntimeRpc<"UpdateRuntimeConfig">;
}

/** The network config files of `dir` that CNI would load (*.conf, *.conflist, *.json). */
export function cniConfigFiles(dir: string): string[] {
  try {
    return fs.readdirSync(dir).filter((f) => /\.(conf|conflist|json)$/.test(f)).sort().map((f) => path.join(dir, f));
  } catch {
    return [];
  }
}

export function createRuntimeInfo(deps: CriDeps): RuntimeInfo {
  let podCidr = "";
  return {
    version: async () => ({ version: "0.1.0", runtime_name: "containerd", runtime_version: CRI_RUNTIME_VERSION, runtime_api_version: "v1" }),
    status: async (_ctx, req) => {
      const files = cniConfigFiles(deps.config.cni.conf_dir);
      const netOk = files.length > 0;
      const conditions = [
        { type: "RuntimeReady", status: true, reason: "", message: "" },
        {
          type: "NetworkReady",
          status: netOk,
          reason: netOk ? "" : "NetworkPluginNotReady",
          message: netOk ? "" : `Network plugin returns error: cni plugin not initialized: no network config found in ${deps.config.cni.conf_dir}`,
        },
      ];
      const info: Record<string, string> = {};
      if (req.verbose) {
        info.config = JSON.stringify({ ...deps.config, podCidr });
        info.cniconfig = JSON.stringify({ PluginDirs: [deps.config.cni.bin_dir], PluginConfDir: deps.config.cni.conf_dir, PluginMaxConfNum: deps.config.cni.max_conf_num, Files: files });
        info.lastCNILoadStatus = netOk ? "OK" : `cni config load failed: no network config found in ${deps.config.cni.conf_dir}`;
      }
      const runtime_handlers = Object.keys(deps.config.containerd.runtimes).sort().map((name) => ({ name, features: { recursive_read_only_mounts: false, user_namespaces: false } }));
      return { status: { conditions }, info, runtime_handlers };
    },
    updateRuntimeConfig: async (_ctx, req) => {
      // containerd keeps the pod CIDR for its CNI config template; with no template there is nothing to write.
      const cidr = req.runtime_config?.network_config?.pod_cidr ?? "";
      if (cidr && cidr !== podCidr) deps.log.info({ podCidr: cidr }, "pod CIDR updated");
      podCidr = cidr;
      return {};
    },
  };
}
