/**
 * The CRI's configuration, in containerd's shape: `[plugins."io.containerd.grpc.v1.cri"]` with its
 * `containerd`, `cni`, `registry`, `image_decryption` and `x509_key_pair_streaming` sub-tables.
 *
 * Every key containerd 1.6 and 1.7 read there is accepted (a containerd config works as it is); the
 * ones Flotilla has no use for (SELinux, AppArmor, image decryption, ...) are checked for their type
 * and otherwise ignored. A value of the wrong type, or a key containerd's CRI does not know, is an
 * error naming the key with its table path, and so are the combinations containerd refuses at start
 * (a `default_runtime_name` with no runtime of that name, `mirrors` next to `config_path`, ...).
 *
 * `criConfig` fills containerd's defaults, with two adjustments for a Debian host: CNI plugins are
 * looked up in `/opt/cni/bin` and then Debian's `/usr/lib/cni` unless `bin_dir` names one directory,
 * and the conf dir falls back to Flotilla's own default network when it holds none (libs/cni).
 */
import * as fs from "node:fs";
import { configError, parseDuration, schema, type Infer, type Schema } from "#libs/config";
import { isTable, type KeyPath } from "#libs/config/schema";
import { DEFAULT_CNI_BIN_DIRS, SYSTEM_CNI_CONF_DIR } from "#libs/cni/defaults";

export const CRI_PLUGIN_TYPE = "io.containerd.grpc.v1";
export const CRI_PLUGIN_ID = "cri";

const str = schema.string;
const bool = schema.bool;
const int = schema.int;
const strings = schema.strings;

/**
 * A table whose listed keys are checked and whose other keys are kept as they are: a runtime's
 * `options`, which containerd decodes into the options type of its `runtime_type` (runc's for the
 * runc shims), so only the keys of that type are known here.
 */
function openTable(known: Record<string, Schema<unknown>>): Schema<Record<string, unknown>> {
  const s: Schema<Record<string, unknown>> = {
    expected: "a table",
    check(v, at) {
      if (!isTable(v)) throw configError(at, `expected a table, got ${Array.isArray(v) ? "array" : typeof v}`);
      const out: Record<string, unknown> = {};
      for (const [k, x] of Object.entries(v)) out[k] = known[k] ? known[k]!.check(x, [...at, k]) : x;
      return out;
    },
  };
  return s;
}

/** runc's shim options (containerd.runc.v1.Options), as TOML spells them under `options`. */
const RUNC_OPTIONS = openTable({
  NoPivotRoot: bool(), NoNewKeyring: bool(), ShimCgroup: str(), IoUid: int(), IoGid: int(), BinaryName: str(),
  Root: str(), CriuPath: str(), SystemdCgroup: bool(), CriuImagePath: str(), CriuWorkPath: str(),
  TaskApiAddress: str(), TaskApiVersion: int(),
});

const RUNTIME_TABLE = schema.table({
  runtime_type: str(),
  runtime_path: str(),
  runtime_engine: str(),
  runtime_root: str(),
  pod_annotations: strings(),
  container_annotations: strings(),
  options: RUNC_OPTIONS,
  privileged_without_host_devices: bool(),
  privileged_without_host_devices_all_devices_allowed: bool(),
  base_runtime_spec: str(),
  cni_conf_dir: str(),
  cni_max_conf_num: int({ min: 0 }),
  snapshotter: str(),
  sandbox_mode: str(),
  sandboxer: str(),
  io_type: str(),
  treat_ro_mounts_as_rro: bool(),
});

const AUTH_TABLE = schema.table({ username: str(), password: str(), auth: str(), identitytoken: str() });
const TLS_TABLE = schema.table({ insecure_skip_verify: bool(), ca_file: str(), cert_file: str(), key_file: str() });

const CRI_TABLE = schema.table({
  containerd: schema.table({
    snapshotter: str(),
    default_runtime_name: str(),
    default_runtime: RUNTIME_TABLE,
    untrusted_workload_runtime: RUNTIME_TABLE,
    runtimes: schema.map(RUNTIME_TABLE),
    no_pivot: bool(),
    disable_snapshot_annotations: bool(),
    discard_unpacked_layers: bool(),
    ignore_blockio_not_enabled_errors: bool(),
    ignore_rdt_not_enabled_errors: bool(),
  }),
  cni: schema.table({
    bin_dir: str(),
    bin_dirs: strings(),
    conf_dir: str(),
    max_conf_num: int({ min: 0 }),
    setup_serially: bool(),
    conf_template: str(),
    ip_pref: schema.oneOf(["", "ipv4", "IPv4", "ipv6", "IPv6", "cni"]),
    use_internal_loopback: bool(),
  }),
  registry: schema.table({
    config_path: str(),
    mirrors: schema.map(schema.table({ endpoint: strings() })),
    configs: schema.map(schema.table({ auth: AUTH_TABLE, tls: TLS_TABLE })),
    auths: schema.map(AUTH_TABLE),
    headers: schema.map(strings()),
  }),
  image_decryption: schema.table({ key_model: str() }),
  disable_tcp_service: bool(),
  stream_server_address: str(),
  stream_server_port: str(),
  stream_idle_timeout: str(),
  enable_selinux: bool(),
  selinux_category_range: int(),
  sandbox_image: str(),
  stats_collect_period: int(),
  systemd_cgroup: bool(),
  enable_tls_streaming: bool(),
  x509_key_pair_streaming: schema.table({ tls_cert_file: str(), tls_key_file: str() }),
  max_container_log_line_size: int(),
  disable_cgroup: bool(),
  disable_apparmor: bool(),
  restrict_oom_score_adj: bool(),
  max_concurrent_downloads: int(),
  disable_proc_mount: bool(),
  unset_seccomp_profile: str(),
  tolerate_missing_hugetlb_controller: bool(),
  disable_hugetlb_controller: bool(),
  device_ownership_from_security_context: bool(),
  ignore_image_defined_volumes: bool(),
  netns_mounts_under_state_dir: bool(),
  enable_unprivileged_ports: bool(),
  enable_unprivileged_icmp: bool(),
  enable_cdi: bool(),
  cdi_spec_dirs: strings(),
  image_pull_progress_timeout: str(),
  drain_exec_sync_io_timeout: str(),
  image_pull_with_sync_fs: bool(),
  ignore_deprecation_warnings: strings(),
});

export type CriTable = Infer<typeof CRI_TABLE>;

const LINUX_V1 = "io.containerd.runtime.v1.linux";

const durationProblem = (v: string): boolean => v !== "" && parseDuration(v) === undefined;

/** The checks containerd makes when its CRI starts (ValidatePluginConfig), each naming the key at fault. */
function validate(t: CriTable, at: KeyPath): void {
  const c = t.containerd ?? {};
  const runtimes = { ...defaultRuntimes(), ...(c.runtimes ?? {}) };
  if (c.untrusted_workload_runtime?.runtime_type && c.runtimes?.untrusted) {
    throw configError([...at, "containerd", "untrusted_workload_runtime"], 'conflicting definitions: configuration includes both `untrusted_workload_runtime` and `runtimes["untrusted"]`');
  }
  const dflt = c.default_runtime?.runtime_type ? "default" : (c.default_runtime_name ?? "runc");
  if (dflt === "") throw configError([...at, "containerd", "default_runtime_name"], "`default_runtime_name` is empty");
  if (!runtimes[dflt] && !(dflt === "default" && c.default_runtime)) {
    throw configError([...at, "containerd", "default_runtime_name"], `no corresponding runtime configured in \`containerd.runtimes\` for \`containerd\` \`default_runtime_name = "${dflt}"\``);
  }
  const dfltType = dflt === "default" ? c.default_runtime?.runtime_type : runtimes[dflt]?.runtime_type;
  if (t.systemd_cgroup && dfltType !== LINUX_V1) throw configError([...at, "systemd_cgroup"], `\`systemd_cgroup\` only works for runtime ${LINUX_V1}`);
  if (c.no_pivot && dfltType !== LINUX_V1) throw configError([...at, "containerd", "no_pivot"], `\`no_pivot\` only works for runtime ${LINUX_V1}`);
  for (const [name, r] of Object.entries(c.runtimes ?? {})) {
    for (const k of ["runtime_engine", "runtime_root"] as const) {
      if (r[k] && r.runtime_type !== LINUX_V1) throw configError([...at, "containerd", "runtimes", name, k], `\`${k}\` only works for runtime ${LINUX_V1}`);
    }
  }
  const reg = t.registry ?? {};
  if (reg.config_path && Object.keys(reg.mirrors ?? {}).length) throw configError([...at, "registry", "mirrors"], "`mirrors` cannot be set when `config_path` is provided");
  if (reg.config_path && Object.values(reg.configs ?? {}).some((x) => x.tls)) throw configError([...at, "registry", "configs"], "`configs.tls` cannot be set when `config_path` is provided");
  for (const k of ["stream_idle_timeout", "image_pull_progress_timeout", "drain_exec_sync_io_timeout"] as const) {
    const v = t[k];
    if (v !== undefined && durationProblem(v)) throw configError([...at, k], `invalid duration ${JSON.stringify(v)} (e.g. "4h0m0s", "30s")`);
  }
  const port = t.stream_server_port;
  if (port !== undefined && !/^\d{1,5}$/.test(port)) throw configError([...at, "stream_server_port"], `expected a port number as a string (e.g. "0", "10010"), got ${JSON.stringify(port)}`);
  if (port !== undefined && Number(port) > 65535) throw configError([...at, "stream_server_port"], `port ${port} is out of range (0 to 65535)`);
  if (t.enable_tls_streaming) {
    const x = t.x509_key_pair_streaming ?? {};
    if (!!x.tls_cert_file !== !!x.tls_key_file) throw configError([...at, "x509_key_pair_streaming"], "tls_cert_file and tls_key_file go together");
  }
}

/** The table's schema: its keys and types, then containerd's start-time checks. */
export const CRI_CONFIG_SCHEMA: Schema<CriTable> = {
  expected: CRI_TABLE.expected,
  check(v, at) {
    const t = CRI_TABLE.check(v, at);
    validate(t, at);
    return t;
  },
};

// ---- the config the CRI process works with ----

/**
 * `.containerd.runtimes.<handler>`: a runtime handler (a pod's `runtime_handler`, a RuntimeClass).
 * Every key of containerd's table, with its default.
 */
export interface CriRuntime {
  /** The task runtime the handler runs (`io.containerd.runc.v2`), given to the tasks service. */
  runtime_type: string;
  runtime_path: string;
  pod_annotations: string[];
  container_annotations: string[];
  /** The runtime's options table, as written (runc's keys for the runc shims). */
  options: Record<string, unknown>;
  privileged_without_host_devices: boolean;
  privileged_without_host_devices_all_devices_allowed: boolean;
  /** A JSON OCI spec file this handler's containers start from ("" = the built-in defaults). */
  base_runtime_spec: string;
  /** Per-handler CNI overrides ("" / 0 = the `[cni]` ones). */
  cni_conf_dir: string;
  cni_max_conf_num: number;
  /** The snapshotter of this handler's containers ("" = `containerd.snapshotter`). */
  snapshotter: string;
  /** The sandbox controller of this handler's pods: "podsandbox" (containerd's default) or "shim". */
  sandboxer: string;
}

export interface RegistryAuth {
  username: string;
  password: string;
  auth: string;
  identitytoken: string;
}

/**
 * The CRI table with containerd's defaults filled: the same names and nesting as the TOML (so
 * containerd's documentation reads for it), plus a few derived values (`cni.bin_dirs`,
 * `registry.config_paths`, durations in milliseconds).
 */
export interface CriConfig {
  sandbox_image: string;
  containerd: {
    snapshotter: string;
    default_runtime_name: string;
    /** Every handler: containerd's built-in `runc`, the configured ones, and the deprecated `default_runtime`/`untrusted_workload_runtime`. */
    runtimes: Record<string, CriRuntime>;
    no_pivot: boolean;
    disable_snapshot_annotations: boolean;
    discard_unpacked_layers: boolean;
    ignore_blockio_not_enabled_errors: boolean;
    ignore_rdt_not_enabled_errors: boolean;
  };
  cni: {
    /** The configured plugin directory; by default the first of /opt/cni/bin and Debian's /usr/lib/cni that exists. */
    bin_dir: string;
    /** Where plugins are looked up, in order: `bin_dirs`, else `bin_dir` when set (/opt/cni/bin falling back to /usr/lib/cni). */
    bin_dirs: string[];
    conf_dir: string;
    max_conf_num: number;
    conf_template: string;
    /** "", "ipv4", "ipv6" or "cni" (lower case). */
    ip_pref: string;
    setup_serially: boolean;
  };
  registry: {
    config_path: string;
    /** `config_path` split at ':' (containerd accepts a list of roots). */
    config_paths: string[];
    /** Deprecated `mirrors` (only without `config_path`): upstream host -> endpoints. */
    mirrors: Record<string, string[]>;
    /** `configs.<host>.auth`, and the deprecated `auths` keyed by host: for pulls that bring no auth. */
    auths: Record<string, RegistryAuth>;
    /** Deprecated `configs.<host>.tls`. */
    tls: Record<string, { insecure_skip_verify: boolean; ca_file: string; cert_file: string; key_file: string }>;
    /** Extra headers of every registry request (the first value of each). */
    headers: Record<string, string>;
  };
  image_decryption: { key_model: string };
  disable_tcp_service: boolean;
  stream_server_address: string;
  /** "0" = any free port. */
  stream_server_port: string;
  stream_idle_timeout: string;
  stream_idle_timeout_ms: number;
  enable_tls_streaming: boolean;
  x509_key_pair_streaming: { tls_cert_file: string; tls_key_file: string };
  enable_selinux: boolean;
  selinux_category_range: number;
  stats_collect_period: number;
  systemd_cgroup: boolean;
  max_container_log_line_size: number;
  disable_cgroup: boolean;
  disable_apparmor: boolean;
  restrict_oom_score_adj: boolean;
  max_concurrent_downloads: number;
  disable_proc_mount: boolean;
  unset_seccomp_profile: string;
  tolerate_missing_hugetlb_controller: boolean;
  disable_hugetlb_controller: boolean;
  device_ownership_from_security_context: boolean;
  ignore_image_defined_volumes: boolean;
  netns_mounts_under_state_dir: boolean;
  enable_unprivileged_ports: boolean;
  enable_unprivileged_icmp: boolean;
  enable_cdi: boolean;
  cdi_spec_dirs: string[];
  /** "" = containerd's 5m; `image_pull_progress_timeout_ms` 0 = none. */
  image_pull_progress_timeout: string;
  image_pull_progress_timeout_ms: number;
  drain_exec_sync_io_timeout: string;
  drain_exec_sync_io_timeout_ms: number;
  image_pull_with_sync_fs: boolean;
  ignore_deprecation_warnings: string[];
}

/** containerd's built-in runtime table: `runc` on the runc v2 shim. */
function defaultRuntimes(): Record<string, Infer<typeof RUNTIME_TABLE>> {
  return { runc: { runtime_type: "io.containerd.runc.v2", options: {} } };
}

function runtimeOf(r: Infer<typeof RUNTIME_TABLE>): CriRuntime {
  return {
    runtime_type: r.runtime_type ?? "",
    runtime_path: r.runtime_path ?? "",
    pod_annotations: r.pod_annotations ?? [],
    container_annotations: r.container_annotations ?? [],
    options: r.options ?? {},
    privileged_without_host_devices: r.privileged_without_host_devices ?? false,
    privileged_without_host_devices_all_devices_allowed: r.privileged_without_host_devices_all_devices_allowed ?? false,
    base_runtime_spec: r.base_runtime_spec ?? "",
    cni_conf_dir: r.cni_conf_dir ?? "",
    cni_max_conf_num: r.cni_max_conf_num ?? 0,
    snapshotter: r.snapshotter ?? "",
    sandboxer: r.sandboxer ?? (r.sandbox_mode === "shim" ? "shim" : "podsandbox"),
  };
}

const authOf = (a: Infer<typeof AUTH_TABLE>): RegistryAuth => ({ username: a.username ?? "", password: a.password ?? "", auth: a.auth ?? "", identitytoken: a.identitytoken ?? "" });

/** The host of a key of `auths`: `https://host:5000/v2` -> `host:5000`; a bare host as it is. */
function hostKey(endpoint: string): string {
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(endpoint)) return endpoint;
  try {
    return new URL(endpoint).host;
  } catch {
    return endpoint;
  }
}

const dur = (v: string | undefined, dflt: number): number => (v === undefined || v === "" ? dflt : parseDuration(v)!);

/** The first of the default CNI plugin directories that exists (containerd's /opt/cni/bin, else Debian's /usr/lib/cni). */
function defaultCniBinDir(): string {
  return DEFAULT_CNI_BIN_DIRS.find((d) => fs.existsSync(d)) ?? DEFAULT_CNI_BIN_DIRS[0]!;
}

/**
 * Where CNI plugins are looked up: `bin_dirs` (containerd 2.x) as given; `bin_dir` alone, except that
 * containerd's default `/opt/cni/bin` (which `containerd config default` writes out) falls back to
 * Debian's `/usr/lib/cni`; neither: both, in that order.
 */
function binDirs(dirs: string[] | undefined, dir: string | undefined): string[] {
  if (dirs?.length) return dirs;
  if (dir && dir !== DEFAULT_CNI_BIN_DIRS[0]) return [dir];
  return [...DEFAULT_CNI_BIN_DIRS];
}

/** The CRI config with containerd's defaults filled; `raw` is the table as written (undefined: none in the file). */
export function criConfig(raw: CriTable | Record<string, unknown> | undefined): CriConfig {
  const t = CRI_CONFIG_SCHEMA.check(raw ?? {}, ["plugins", `${CRI_PLUGIN_TYPE}.${CRI_PLUGIN_ID}`]);
  const c = t.containerd ?? {};
  const runtimes: Record<string, CriRuntime> = {};
  for (const [name, r] of Object.entries({ ...defaultRuntimes(), ...(c.runtimes ?? {}) })) runtimes[name] = runtimeOf(r);
  if (c.untrusted_workload_runtime?.runtime_type) runtimes.untrusted = runtimeOf(c.untrusted_workload_runtime);
  let defaultRuntimeName = c.default_runtime_name ?? "runc";
  if (c.default_runtime?.runtime_type) {
    defaultRuntimeName = "default";
    runtimes.default = runtimeOf(c.default_runtime);
  }
  const reg = t.registry ?? {};
  const auths: Record<string, RegistryAuth> = {};
  for (const [endpoint, a] of Object.entries(reg.auths ?? {})) auths[hostKey(endpoint)] = authOf(a);
  for (const [host, x] of Object.entries(reg.configs ?? {})) if (x.auth) auths[host] = authOf(x.auth);
  const tls: CriConfig["registry"]["tls"] = {};
  for (const [host, x] of Object.entries(reg.configs ?? {})) {
    if (x.tls) tls[host] = { insecure_skip_verify: x.tls.insecure_skip_verify ?? false, ca_file: x.tls.ca_file ?? "", cert_file: x.tls.cert_file ?? "", key_file: x.tls.key_file ?? "" };
  }
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(reg.headers ?? {})) if (v.length) headers[k] = v[0]!;
  const cni = t.cni ?? {};
  const streamIdle = t.stream_idle_timeout ?? "4h0m0s";
  return {
    sandbox_image: t.sandbox_image ?? "registry.k8s.io/pause:3.6",
    containerd: {
      snapshotter: c.snapshotter ?? "overlayfs",
      default_runtime_name: defaultRuntimeName,
      runtimes,
      no_pivot: c.no_pivot ?? false,
      disable_snapshot_annotations: c.disable_snapshot_annotations ?? true,
      discard_unpacked_layers: c.discard_unpacked_layers ?? false,
      ignore_blockio_not_enabled_errors: c.ignore_blockio_not_enabled_errors ?? false,
      ignore_rdt_not_enabled_errors: c.ignore_rdt_not_enabled_errors ?? false,
    },
    cni: {
      bin_dir: cni.bin_dir ?? defaultCniBinDir(),
      bin_dirs: binDirs(cni.bin_dirs, cni.bin_dir),
      conf_dir: cni.conf_dir ?? SYSTEM_CNI_CONF_DIR,
      max_conf_num: cni.max_conf_num ?? 1,
      conf_template: cni.conf_template ?? "",
      ip_pref: (cni.ip_pref ?? "").toLowerCase(),
      setup_serially: cni.setup_serially ?? false,
    },
    registry: {
      config_path: reg.config_path ?? "",
      config_paths: (reg.config_path ?? "").split(":").filter(Boolean),
      mirrors: Object.fromEntries(Object.entries(reg.mirrors ?? {}).map(([h, m]) => [h, m.endpoint ?? []])),
      auths,
      tls,
      headers,
    },
    image_decryption: { key_model: t.image_decryption?.key_model ?? "node" },
    disable_tcp_service: t.disable_tcp_service ?? true,
    stream_server_address: t.stream_server_address ?? "127.0.0.1",
    stream_server_port: t.stream_server_port ?? "0",
    stream_idle_timeout: streamIdle,
    stream_idle_timeout_ms: dur(streamIdle, 4 * 3600_000),
    enable_tls_streaming: t.enable_tls_streaming ?? false,
    x509_key_pair_streaming: { tls_cert_file: t.x509_key_pair_streaming?.tls_cert_file ?? "", tls_key_file: t.x509_key_pair_streaming?.tls_key_file ?? "" },
    enable_selinux: t.enable_selinux ?? false,
    selinux_category_range: t.selinux_category_range ?? 1024,
    stats_collect_period: t.stats_collect_period ?? 10,
    systemd_cgroup: t.systemd_cgroup ?? false,
    max_container_log_line_size: t.max_container_log_line_size ?? 16 * 1024,
    disable_cgroup: t.disable_cgroup ?? false,
    disable_apparmor: t.disable_apparmor ?? false,
    restrict_oom_score_adj: t.restrict_oom_score_adj ?? false,
    max_concurrent_downloads: t.max_concurrent_downloads ?? 3,
    disable_proc_mount: t.disable_proc_mount ?? false,
    unset_seccomp_profile: t.unset_seccomp_profile ?? "",
    tolerate_missing_hugetlb_controller: t.tolerate_missing_hugetlb_controller ?? true,
    disable_hugetlb_controller: t.disable_hugetlb_controller ?? true,
    device_ownership_from_security_context: t.device_ownership_from_security_context ?? false,
    ignore_image_defined_volumes: t.ignore_image_defined_volumes ?? false,
    netns_mounts_under_state_dir: t.netns_mounts_under_state_dir ?? false,
    enable_unprivileged_ports: t.enable_unprivileged_ports ?? false,
    enable_unprivileged_icmp: t.enable_unprivileged_icmp ?? false,
    enable_cdi: t.enable_cdi ?? false,
    cdi_spec_dirs: t.cdi_spec_dirs ?? ["/etc/cdi", "/var/run/cdi"],
    image_pull_progress_timeout: t.image_pull_progress_timeout ?? "5m0s",
    image_pull_progress_timeout_ms: dur(t.image_pull_progress_timeout, 5 * 60_000),
    drain_exec_sync_io_timeout: t.drain_exec_sync_io_timeout ?? "0s",
    drain_exec_sync_io_timeout_ms: dur(t.drain_exec_sync_io_timeout, 0),
    image_pull_with_sync_fs: t.image_pull_with_sync_fs ?? false,
    ignore_deprecation_warnings: t.ignore_deprecation_warnings ?? [],
  };
}

/** The runtime of a pod's `runtime_handler` ("" = the default); undefined when none has that name. */
export function runtimeFor(cfg: CriConfig, handler: string): CriRuntime | undefined {
  return cfg.containerd.runtimes[handler || cfg.containerd.default_runtime_name];
}
