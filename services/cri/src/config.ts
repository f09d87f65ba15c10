/**
 * The CRI's configuration, `[plugins."io.containerd.grpc.v1.cri"]`, in containerd's shape.
 *
 * PLACEHOLDER (skeleton): helper D replaces this file with the full schema (every key of containerd's
 * CRI config accepted with its meaning and defaults). Until then the table is accepted as it is and
 * only the keys below are read, with containerd's defaults.
 */
import type { Schema } from "#libs/config";
import { isTable } from "#libs/config/schema";

/** `.containerd.runtimes.<handler>`: a runtime handler (`--runtime-handler`, RuntimeClass). */
export interface CriRuntime {
  /** The task runtime the handler runs (e.g. `io.containerd.runc.v2`). */
  runtime_type: string;
  /** The runtime's options table, as written. */
  options: Record<string, unknown>;
  /** The sandboxer that runs this handler's pods (containerd 2.x); "podsandbox" by default. */
  sandboxer: string;
}

export interface CriConfig {
  sandbox_image: string;
  stream_server_address: string;
  stream_server_port: string;
  stream_idle_timeout: string;
  enable_tls_streaming: boolean;
  enable_selinux: boolean;
  restrict_oom_score_adj: boolean;
  max_container_log_line_size: number;
  stats_collect_period: number;
  disable_cgroup: boolean;
  cni: { bin_dir: string; conf_dir: string; max_conf_num: number; conf_template: string };
  containerd: { default_runtime_name: string; snapshotter: string; runtimes: Record<string, CriRuntime> };
  registry: { config_path: string };
}

/** Accepts the table as written (the full schema comes with the CRI config work). */
export const CRI_CONFIG_SCHEMA: Schema<Record<string, unknown>> = {
  expected: "a table",
  check(v) {
    return isTable(v) ? v : {};
  },
};

const tbl = (v: unknown): Record<string, unknown> => (isTable(v) ? v : {});
const str = (v: unknown, d: string): string => (typeof v === "string" ? v : d);
const num = (v: unknown, d: number): number => (typeof v === "number" || typeof v === "bigint" ? Number(v) : d);
const bool = (v: unknown, d: boolean): boolean => (typeof v === "boolean" ? v : d);

/** The CRI config with containerd's defaults filled in. */
export function criConfig(raw: Record<string, unknown>): CriConfig {
  const cni = tbl(raw.cni);
  const ctrd = tbl(raw.containerd);
  const runtimes: Record<string, CriRuntime> = {};
  for (const [name, r] of Object.entries(tbl(ctrd.runtimes))) {
    const t = tbl(r);
    runtimes[name] = { runtime_type: str(t.runtime_type, "io.containerd.runc.v2"), options: tbl(t.options), sandboxer: str(t.sandboxer, "podsandbox") };
  }
  if (!runtimes.runc) runtimes.runc = { runtime_type: "io.containerd.runc.v2", options: {}, sandboxer: "podsandbox" };
  return {
    sandbox_image: str(raw.sandbox_image, "registry.k8s.io/pause:3.6"),
    stream_server_address: str(raw.stream_server_address, "127.0.0.1"),
    stream_server_port: str(raw.stream_server_port, "10010"),
    stream_idle_timeout: str(raw.stream_idle_timeout, "4h0m0s"),
    enable_tls_streaming: bool(raw.enable_tls_streaming, false),
    enable_selinux: bool(raw.enable_selinux, false),
    restrict_oom_score_adj: bool(raw.restrict_oom_score_adj, false),
    max_container_log_line_size: num(raw.max_container_log_line_size, 16 * 1024),
    stats_collect_period: num(raw.stats_collect_period, 10),
    disable_cgroup: bool(raw.disable_cgroup, false),
    cni: {
      bin_dir: str(cni.bin_dir, "/opt/cni/bin"),
      conf_dir: str(cni.conf_dir, "/etc/cni/net.d"),
      max_conf_num: num(cni.max_conf_num, 1),
      conf_template: str(cni.conf_template, ""),
    },
    containerd: { default_runtime_name: str(ctrd.default_runtime_name, "runc"), snapshotter: str(ctrd.snapshotter, "overlayfs"), runtimes },
    registry: { config_path: str(tbl(raw.registry).config_path, "") },
  };
}
