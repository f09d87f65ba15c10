/**
 * The OCI runtime spec of a CRI container, built from the kubelet's ContainerConfig, the pod's
 * PodSandboxConfig and the image config, as containerd 1.6's CRI builds it: containerd's default unix
 * spec without its default security settings, the process from the config over the image's, the
 * pod's files (hostname, hosts, resolv.conf, /dev/shm) and the kubelet's mounts, devices,
 * capabilities, privileged mode, user and groups, resources, the pod's namespaces, seccomp, and the
 * CRI annotations. Host facts (hostname, cgroup mode, devices, mount propagation) come through
 * `SpecHost`, user and group lookups through `RootfsFiles`, so the builder itself does no I/O.
 */
import * as path from "node:path";
import { errInvalidArgument, errNotFound, errFailedPrecondition } from "#libs/errdefs";
import { MASKED_PATHS, READONLY_PATHS, defaultMounts } from "#libs/sandboxrun/oci-defaults";
import { defaultSeccompProfile, type SeccompProfile } from "./seccomp";
import { resolveUser, additionalGids, type RootfsFiles } from "./users";

// ---- CRI input shapes (the decoded runtime.v1 messages; only what the spec needs) ----

type Opt<T> = T | null | undefined;
export interface CriInt64Value { value?: Opt<number | string> }
export interface CriNamespaceOption { network?: Opt<number>; pid?: Opt<number>; ipc?: Opt<number>; target_id?: Opt<string> }
export interface CriSecurityProfile { profile_type?: Opt<number>; localhost_ref?: Opt<string> }
export interface CriMount { container_path?: Opt<string>; host_path?: Opt<string>; readonly?: Opt<boolean>; selinux_relabel?: Opt<boolean>; propagation?: Opt<number> }
export interface CriDevice { container_path?: Opt<string>; host_path?: Opt<string>; permissions?: Opt<string> }
export interface CriHugepageLimit { page_size?: Opt<string>; limit?: Opt<number | string> }
export interface CriLinuxResources {
  cpu_period?: Opt<number | string>; cpu_quota?: Opt<number | string>; cpu_shares?: Opt<number | string>;
  memory_limit_in_bytes?: Opt<number | string>; oom_score_adj?: Opt<number | string>;
  cpuset_cpus?: Opt<string>; cpuset_mems?: Opt<string>; hugepage_limits?: Opt<readonly CriHugepageLimit[]>;
  unified?: Opt<Record<string, string>>; memory_swap_limit_in_bytes?: Opt<number | string>;
}
export interface CriContainerSecurityContext {
  capabilities?: Opt<{ add_capabilities?: Opt<readonly string[]>; drop_capabilities?: Opt<readonly string[]> }>;
  privileged?: Opt<boolean>; namespace_options?: Opt<CriNamespaceOption>;
  run_as_user?: Opt<CriInt64Value>; run_as_group?: Opt<CriInt64Value>; run_as_username?: Opt<string>;
  readonly_rootfs?: Opt<boolean>; supplemental_groups?: Opt<readonly (number | string)[]>; no_new_privs?: Opt<boolean>;
  masked_paths?: Opt<readonly string[]>; readonly_paths?: Opt<readonly string[]>;
  seccomp?: Opt<CriSecurityProfile>; apparmor?: Opt<CriSecurityProfile>;
  apparmor_profile?: Opt<string>; seccomp_profile_path?: Opt<string>;
}
export interface CriContainerConfig {
  metadata?: Opt<{ name?: Opt<string>; attempt?: Opt<number> }>;
  image?: Opt<{ image?: Opt<string> }>;
  command?: Opt<readonly string[]>; args?: Opt<readonly string[]>; working_dir?: Opt<string>;
  envs?: Opt<readonly { key?: Opt<string>; value?: Opt<string | Uint8Array> }[]>;
  mounts?: Opt<readonly CriMount[]>; devices?: Opt<readonly CriDevice[]>;
  labels?: Opt<Record<string, string>>; annotations?: Opt<Record<string, string>>;
  log_path?: Opt<string>; stdin?: Opt<boolean>; stdin_once?: Opt<boolean>; tty?: Opt<boolean>;
  linux?: Opt<{ resources?: Opt<CriLinuxResources>; security_context?: Opt<CriContainerSecurityContext> }>;
}
export interface CriPodSandboxConfig {
  metadata?: Opt<{ name?: Opt<string>; uid?: Opt<string>; namespace?: Opt<string>; attempt?: Opt<number> }>;
  hostname?: Opt<string>; log_directory?: Opt<string>;
  labels?: Opt<Record<string, string>>; annotations?: Opt<Record<string, string>>;
  linux?: Opt<{ cgroup_parent?: Opt<string>; security_context?: Opt<{ privileged?: Opt<boolean>; namespace_options?: Opt<CriNamespaceOption> }>; sysctls?: Opt<Record<string, string>> }>;
}
/** The image config fields the spec uses (an OCI image config's `config`). */
export interface ImageRunConfig {
  User?: string; Env?: string[] | null; Entrypoint?: string[] | null; Cmd?: string[] | null; WorkingDir?: string;
  Labels?: Record<string, string> | null; StopSignal?: string; Volumes?: Record<string, unknown> | null;
}

/** runtime.v1 enums used here. */
export const NamespaceMode = { POD: 0, CONTAINER: 1, NODE: 2, TARGET: 3 } as const;
export const MountPropagation = { PRIVATE: 0, HOST_TO_CONTAINER: 1, BIDIRECTIONAL: 2 } as const;
export const ProfileType = { RuntimeDefault: 0, Unconfined: 1, Localhost: 2 } as const;

/** containerd's CRI annotations (pkg/cri/annotations). */
export const CriAnnotations = {
  containerType: "io.kubernetes.cri.container-type",
  sandboxId: "io.kubernetes.cri.sandbox-id",
  sandboxNamespace: "io.kubernetes.cri.sandbox-namespace",
  sandboxUid: "io.kubernetes.cri.sandbox-uid",
  sandboxName: "io.kubernetes.cri.sandbox-name",
  containerName: "io.kubernetes.cri.container-name",
  imageName: "io.kubernetes.cri.image-name",
} as const;

// ---- the OCI spec (the parts written here) ----

export interface OciUser { uid: number; gid: number; additionalGids?: number[]; umask?: number }
export interface OciMount { destination: string; type?: string; source?: string; options?: string[] }
export interface OciDevice { path: string; type: string; major: number; minor: number; fileMode?: number; uid?: number; gid?: number }
export interface OciDeviceCgroup { allow: boolean; type?: string; major?: number; minor?: number; access?: string }
export interface OciResources {
  devices?: OciDeviceCgroup[];
  memory?: { limit?: number; swap?: number };
  cpu?: { shares?: number; quota?: number; period?: number; cpus?: string; mems?: string };
  hugepageLimits?: { pageSize: string; limit: number }[];
  unified?: Record<string, string>;
}
export interface OciSpec {
  ociVersion: string;
  process: {
    terminal?: boolean; user: OciUser; args: string[]; env: string[]; cwd: string;
    capabilities: { bounding: string[]; effective: string[]; permitted: string[] };
    noNewPrivileges?: boolean; oomScoreAdj?: number; apparmorProfile?: string;
  };
  root: { path: string; readonly?: boolean };
  hostname?: string;
  mounts: OciMount[];
  annotations: Record<string, string>;
  linux: {
    resources: OciResources; cgroupsPath?: string; namespaces: { type: string; path?: string }[];
    devices?: OciDevice[]; maskedPaths?: string[]; readonlyPaths?: string[]; rootfsPropagation?: string;
    sysctl?: Record<string, string>; seccomp?: SeccompProfile;
  };
}

// ---- host facts ----

export interface HostDeviceInfo { path: string; type: "c" | "b" | "p"; major: number; minor: number; fileMode: number; uid: number; gid: number }

export interface SpecHost {
  hostname(): string;
  /** cgroup v2 only (then containers get a cgroup namespace). */
  cgroupUnified: boolean;
  swapAvailable: boolean;
  hugetlbAvailable: boolean;
  seccompEnabled: boolean;
  /** The CRI process's own oom_score_adj (the floor with restrict_oom_score_adj). */
  currentOomScoreAdj(): number;
  /** The bind source as runc will see it: created (0755) when missing, symlinks resolved. */
  prepareHostPath(p: string): string;
  /** The optional fields of the mount holding `p` (`shared:N`, `master:N`), for propagation checks. */
  mountPropagationOf(p: string): { mountpoint: string; optional: string };
  /** The device node at `p`, or every device under the directory `p`. */
  devicesAt(p: string): HostDeviceInfo[];
  /** Every device of the host's /dev (privileged containers). */
  hostDevices(): HostDeviceInfo[];
  /** Every capability the kernel knows (`ALL`). */
  allCapabilities(): string[];
  /** A seccomp profile file (a `localhost/` profile). */
  readProfile(p: string): string;
}

export interface SpecInput {
  id: string;
  sandboxId: string;
  /** The pause process (host pid). */
  sandboxPid: number;
  /** The pid of the container whose PID namespace a TARGET container joins. */
  targetPid?: number;
  config: CriContainerConfig;
  sandboxConfig: CriPodSandboxConfig;
  image: ImageRunConfig;
  /** The upstream name of the image (the CRI image-name annotation). */
  imageName: string;
  /** Pod files: hostname, hosts, resolv.conf and shm under the sandbox's dirs ("" = not there). */
  podFiles: { hostname: string; hosts: string; resolvConf: string; shm: string };
  /** Extra mounts (the image's volumes), after the kubelet's. */
  extraMounts?: CriMount[];
  rootfs: RootfsFiles;
  /** CRI config switches (containerd's names). */
  options?: {
    restrictOomScoreAdj?: boolean; disableProcMount?: boolean; disableCgroup?: boolean;
    privilegedWithoutHostDevices?: boolean; deviceOwnershipFromSecurityContext?: boolean;
    tolerateMissingHugetlbController?: boolean; disableHugetlbController?: boolean;
    unsetSeccompProfile?: string; podAnnotations?: readonly string[]; containerAnnotations?: readonly string[];
  };
}

/** containerd's default unix capabilities. */
export const DEFAULT_CAPS: readonly string[] = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"];
const DEFAULT_PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

const num = (v: Opt<number | string>): number => (v === null || v === undefined || v === "" ? 0 : Number(v));

/** Set or replace `KEY=value` entries, keeping order (containerd's replaceOrAppendEnvValues). */
export function mergeEnv(base: readonly string[], overrides: readonly string[]): string[] {
  const out = [...base];
  const at = new Map<string, number>();
  out.forEach((e, i) => at.set(e.split("=", 1)[0]!, i));
  for (const e of overrides) {
    const k = e.split("=", 1)[0]!;
    const i = at.get(k);
    if (i !== undefined) out[i] = e;
    else {
      at.set(k, out.length);
      out.push(e);
    }
  }
  return out;
}

/** The process args: the kubelet's command/args over the image's entrypoint/cmd (containerd's rules). */
export function processArgs(config: CriContainerConfig, image: ImageRunConfig): string[] {
  let command = config.command ? [...config.command] : [];
  let args = config.args ? [...config.args] : [];
  if (command.length === 0) {
    if (args.length === 0) args = [...(image.Cmd ?? [])];
    const ep = image.Entrypoint ?? [];
    if (!(ep.length === 1 && ep[0] === "")) command = [...ep];
  }
  if (command.length === 0 && args.length === 0) throw errInvalidArgument("no command specified");
  return [...command, ...args];
}

/** `user[:group]` from the security context ("" = the image decides), as containerd forms it. */
export function userString(sc: Opt<CriContainerSecurityContext>): string {
  let user = "";
  if (sc?.run_as_user) user = String(num(sc.run_as_user.value));
  if (sc?.run_as_username) user = sc.run_as_username;
  const group = sc?.run_as_group ? String(num(sc.run_as_group.value)) : "";
  if (!user) {
    if (group) throw errInvalidArgument(`user group "${group}" is specified without user`);
    return "";
  }
  return group ? `${user}:${group}` : user;
}

const cleanPath = (p: string): string => path.posix.normalize(p).replace(/(.)\/+$/, "$1");
const depth = (p: string): number => (cleanPath(p).match(/\//g) ?? []).length;

/** The pod-file mounts a container gets unless the kubelet mounts those paths itself. */
export function podFileMounts(config: CriContainerConfig, files: SpecInput["podFiles"]): CriMount[] {
  const sc = config.linux?.security_context;
  const ro = !!sc?.readonly_rootfs;
  const has = (p: string): boolean => (config.mounts ?? []).some((m) => cleanPath(m.container_path ?? "") === p);
  const out: CriMount[] = [];
  if (files.hostname && !has("/etc/hostname")) out.push({ container_path: "/etc/hostname", host_path: files.hostname, readonly: ro });
  if (!has("/etc/hosts")) out.push({ container_path: "/etc/hosts", host_path: files.hosts, readonly: ro });
  if (!has("/etc/resolv.conf")) out.push({ container_path: "/etc/resolv.conf", host_path: files.resolvConf, readonly: ro });
  if (!has("/dev/shm")) {
    const shm = sc?.namespace_options?.ipc === NamespaceMode.NODE ? "/dev/shm" : files.shm;
    out.push({ container_path: "/dev/shm", host_path: shm, readonly: false });
  }
  return out;
}

function applyMounts(spec: OciSpec, host: SpecHost, criMounts: readonly CriMount[], extra: readonly CriMount[]): void {
  const mounts = [...criMounts];
  for (const e of extra) if (!criMounts.some((c) => cleanPath(c.container_path ?? "") === cleanPath(e.container_path ?? ""))) mounts.push(e);
  // Parents before children (a stable sort by path depth).
  const ordered = mounts.map((m, i) => ({ m, i })).sort((a, b) => depth(a.m.container_path ?? "") - depth(b.m.container_path ?? "") || a.i - b.i).map((x) => x.m);
  const defaults = [...spec.mounts, { destination: "/sys/fs/cgroup", type: "cgroup", source: "cgroup", options: ["nosuid", "noexec", "nodev", "relatime", "ro"] }];
  const taken = new Set(ordered.map((m) => cleanPath(m.container_path ?? "")));
  spec.mounts = defaults.filter((m) => {
    const dst = cleanPath(m.destination);
    if (taken.has(dst)) return false;
    return !(taken.has("/dev") && dst.startsWith("/dev/"));
  });
  for (const m of ordered) {
    const dst = m.container_path ?? "";
    const src = host.prepareHostPath(m.host_path ?? "");
    const options = ["rbind"];
    switch (m.propagation ?? MountPropagation.PRIVATE) {
      case MountPropagation.PRIVATE:
        options.push("rprivate");
        break;
      case MountPropagation.BIDIRECTIONAL: {
        const mi = host.mountPropagationOf(src);
        if (!mi.optional.split(" ").some((o) => o.startsWith("shared:"))) throw errFailedPrecondition(`path "${src}" is mounted on "${mi.mountpoint}" but it is not a shared mount`);
        options.push("rshared");
        spec.linux.rootfsPropagation = "rshared";
        break;
      }
      case MountPropagation.HOST_TO_CONTAINER: {
        const mi = host.mountPropagationOf(src);
        if (!mi.optional.split(" ").some((o) => o.startsWith("shared:") || o.startsWith("master:"))) throw errFailedPrecondition(`path "${src}" is mounted on "${mi.mountpoint}" but it is not a shared or slave mount`);
        options.push("rslave");
        if (spec.linux.rootfsPropagation !== "rshared" && spec.linux.rootfsPropagation !== "rslave") spec.linux.rootfsPropagation = "rslave";
        break;
      }
      default:
        options.push("rprivate");
    }
    options.push(m.readonly ? "ro" : "rw");
    spec.mounts.push({ source: src, destination: dst, type: "bind", options });
  }
}

function devicePermissions(p: string): string {
  return [...p].filter((c) => c === "r" || c === "w" || c === "m").join("");
}

function applyDevices(spec: OciSpec, host: SpecHost, input: SpecInput): void {
  const sc = input.config.linux?.security_context;
  for (const d of input.config.devices ?? []) {
    const found = host.devicesAt(d.host_path ?? "");
    const hostPath = d.host_path ?? "";
    for (const dev of found) {
      // A directory's devices keep their place under the container path.
      const rel = dev.path === hostPath ? "" : path.posix.relative(hostPath, dev.path);
      const ctrPath = rel ? path.posix.join(d.container_path || hostPath, rel) : d.container_path || dev.path;
      const entry: OciDevice = { path: ctrPath, type: dev.type, major: dev.major, minor: dev.minor, fileMode: dev.fileMode, uid: dev.uid, gid: dev.gid };
      if (input.options?.deviceOwnershipFromSecurityContext) {
        const uid = num(sc?.run_as_user?.value);
        const gid = num(sc?.run_as_group?.value);
        if (uid) entry.uid = uid;
        if (gid) entry.gid = gid;
      }
      (spec.linux.devices ??= []).push(entry);
      (spec.linux.resources.devices ??= []).push({ allow: true, type: dev.type, major: dev.major, minor: dev.minor, access: devicePermissions(d.permissions ?? "rwm") });
    }
  }
}

function applyCapabilities(spec: OciSpec, host: SpecHost, sc: Opt<CriContainerSecurityContext>): void {
  const c = sc?.capabilities;
  if (!c) return;
  const caps = spec.process.capabilities;
  const setAll = (list: string[]): void => {
    caps.bounding = [...list];
    caps.effective = [...list];
    caps.permitted = [...list];
  };
  const add = c.add_capabilities ?? [];
  const drop = c.drop_capabilities ?? [];
  if (add.some((x) => x.toUpperCase() === "ALL")) setAll(host.allCapabilities());
  if (drop.some((x) => x.toUpperCase() === "ALL")) setAll([]);
  for (const x of add) {
    if (x.toUpperCase() === "ALL") continue;
    const name = "CAP_" + x.toUpperCase();
    for (const l of [caps.bounding, caps.effective, caps.permitted]) if (!l.includes(name)) l.push(name);
  }
  for (const x of drop) {
    if (x.toUpperCase() === "ALL") continue;
    const name = "CAP_" + x.toUpperCase();
    caps.bounding = caps.bounding.filter((y) => y !== name);
    caps.effective = caps.effective.filter((y) => y !== name);
    caps.permitted = caps.permitted.filter((y) => y !== name);
  }
}

/** Write the CRI resources into `res` (containerd's WithResources). */
export function applyResources(res: OciResources, host: Pick<SpecHost, "swapAvailable" | "hugetlbAvailable">, r: Opt<CriLinuxResources>, options: SpecInput["options"]): void {
  if (!r) return;
  const cpu = (res.cpu ??= {});
  const mem = (res.memory ??= {});
  const period = num(r.cpu_period), quota = num(r.cpu_quota), shares = num(r.cpu_shares);
  const limit = num(r.memory_limit_in_bytes), swap = num(r.memory_swap_limit_in_bytes);
  if (period) cpu.period = period;
  if (quota) cpu.quota = quota;
  if (shares) cpu.shares = shares;
  if (r.cpuset_cpus) cpu.cpus = r.cpuset_cpus;
  if (r.cpuset_mems) cpu.mems = r.cpuset_mems;
  if (limit) {
    mem.limit = limit;
    if (!swap && host.swapAvailable) mem.swap = limit;
  }
  if (swap) mem.swap = swap;
  const huge = r.hugepage_limits ?? [];
  if (!options?.disableHugetlbController && huge.length) {
    if (host.hugetlbAvailable) res.hugepageLimits = huge.map((h) => ({ pageSize: h.page_size ?? "", limit: num(h.limit) }));
    else if (!options?.tolerateMissingHugetlbController) throw errFailedPrecondition("huge pages limits are specified but hugetlb cgroup controller is missing. Please set tolerate_missing_hugetlb_controller to `true` to ignore this error");
  }
  if (r.unified && Object.keys(r.unified).length) res.unified = { ...(res.unified ?? {}), ...r.unified };
}

/** The OOM score adjustment asked for, never below the CRI process's own with restrict_oom_score_adj. */
export function oomScoreAdj(r: CriLinuxResources, host: Pick<SpecHost, "currentOomScoreAdj">, restrict: boolean): number {
  const adj = num(r.oom_score_adj);
  return restrict ? Math.max(adj, host.currentOomScoreAdj()) : adj;
}

/** containerd's getCgroupsPath: a systemd slice parent gives `slice:cri-containerd:id`, else a path. */
export function cgroupsPath(parent: string, id: string): string {
  const base = path.posix.basename(parent);
  if (base.endsWith(".slice")) return `${base}:cri-containerd:${id}`;
  return path.posix.join(parent, id);
}

/** The profile the kubelet asks for, from the structured field or the deprecated path. */
function seccompProfileOf(sc: Opt<CriContainerSecurityContext>, unsetProfile: string): CriSecurityProfile | undefined {
  if (sc?.seccomp) return sc.seccomp;
  const p = sc?.seccomp_profile_path || unsetProfile;
  if (!p) return undefined;
  return profileFromPath(p);
}

function profileFromPath(p: string): CriSecurityProfile {
  if (p === "runtime/default" || p === "docker/default") return { profile_type: ProfileType.RuntimeDefault };
  if (p === "unconfined") return { profile_type: ProfileType.Unconfined };
  if (!p.startsWith("localhost/")) throw errInvalidArgument(`invalid profile "${p}"`);
  return { profile_type: ProfileType.Localhost, localhost_ref: p.slice("localhost/".length) };
}

function applySeccomp(spec: OciSpec, host: SpecHost, sc: Opt<CriContainerSecurityContext>, unsetProfile: string): void {
  const sp = seccompProfileOf(sc, unsetProfile);
  if (sc?.privileged) return;
  if (!host.seccompEnabled) {
    if (sp && sp.profile_type !== ProfileType.Unconfined) throw errFailedPrecondition("seccomp is not supported");
    return;
  }
  if (!sp) return;
  const type = sp.profile_type ?? ProfileType.RuntimeDefault;
  if (type !== ProfileType.Localhost && sp.localhost_ref) throw errInvalidArgument("seccomp config invalid LocalhostRef must only be set if ProfileType is Localhost");
  if (type === ProfileType.Unconfined) return;
  if (type === ProfileType.RuntimeDefault) {
    spec.linux.seccomp = defaultSeccompProfile(spec.process.capabilities.bounding);
    return;
  }
  if (type !== ProfileType.Localhost) throw errInvalidArgument("seccomp unknown ProfileType");
  const file = (sp.localhost_ref ?? "").replace(/^localhost\//, "");
  let text: string;
  try {
    text = host.readProfile(file);
  } catch (e) {
    throw errNotFound(`failed to read seccomp profile ${JSON.stringify(file)}: ${(e as Error).message}`);
  }
  try {
    spec.linux.seccomp = JSON.parse(text) as SeccompProfile;
  } catch (e) {
    throw errInvalidArgument(`failed to parse seccomp profile ${JSON.stringify(file)}: ${(e as Error).message}`);
  }
}

function applyApparmor(sc: Opt<CriContainerSecurityContext>): void {
  // AppArmor is not enabled on the hosts Flotilla runs on: only "unconfined" (or nothing) is accepted.
  let sp = sc?.apparmor ?? undefined;
  if (!sp && sc?.apparmor_profile) sp = profileFromPath(sc.apparmor_profile);
  if (sp && sp.profile_type !== ProfileType.Unconfined) throw errFailedPrecondition("apparmor is not supported");
}

/** The pod's namespaces for a container: network, IPC and UTS of the pause process, PID unless CONTAINER. */
function podNamespaces(sc: Opt<CriContainerSecurityContext>, sandboxPid: number, targetPid: number): { type: string; path?: string }[] {
  const ns = (t: string, pid: number): string => `/proc/${pid}/ns/${t}`;
  const out: { type: string; path?: string }[] = [
    { type: "pid" }, { type: "ipc" }, { type: "uts" }, { type: "mount" }, { type: "network" },
  ];
  const set = (type: string, p: string): void => {
    const i = out.findIndex((n) => n.type === type);
    out[i] = { type, path: p };
  };
  set("network", ns("net", sandboxPid));
  set("ipc", ns("ipc", sandboxPid));
  set("uts", ns("uts", sandboxPid));
  if ((sc?.namespace_options?.pid ?? NamespaceMode.POD) !== NamespaceMode.CONTAINER) set("pid", ns("pid", targetPid));
  return out;
}

/** Annotations passed through from the pod or container config by the runtime's allow-list (`*` globs). */
export function passthroughAnnotations(annotations: Opt<Record<string, string>>, allowed: readonly string[] | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  if (!annotations || !allowed?.length) return out;
  const res = allowed.map((p) => new RegExp("^" + p.split("*").map((s) => s.replace(/[.+?^${}()|[\]\\]/g, "\\$&")).join(".*") + "$"));
  for (const [k, v] of Object.entries(annotations)) if (res.some((r) => r.test(k))) out[k] = v;
  return out;
}

/** Build the spec. Throws InvalidArgument / FailedPrecondition / NotFound with containerd's messages. */
export function buildContainerSpec(input: SpecInput, host: SpecHost): OciSpec {
  const { config, sandboxConfig, image } = input;
  const sc = config.linux?.security_context;
  const opts = input.options ?? {};
  const namespace = "k8s.io";
  const spec: OciSpec = {
    ociVersion: "1.0.2-dev",
    process: {
      user: { uid: 0, gid: 0 },
      args: processArgs(config, image),
      env: [],
      cwd: "/",
      capabilities: { bounding: [...DEFAULT_CAPS], effective: [...DEFAULT_CAPS], permitted: [...DEFAULT_CAPS] },
      // Set from the security context below.
      noNewPrivileges: false,
    },
    root: { path: "rootfs" },
    mounts: defaultMounts().map((m) => m as unknown as OciMount),
    annotations: {},
    linux: {
      resources: { devices: [{ allow: false, access: "rwm" }] },
      cgroupsPath: `/${namespace}/${input.id}`,
      namespaces: [],
      maskedPaths: [...MASKED_PATHS],
      readonlyPaths: [...READONLY_PATHS],
    },
  };
  spec.process.env = mergeEnv([], [DEFAULT_PATH_ENV]);
  const cwd = config.working_dir || image.WorkingDir;
  if (cwd) spec.process.cwd = cwd;
  if (config.tty) spec.process.terminal = true;
  spec.process.env = mergeEnv(spec.process.env, [`HOSTNAME=${sandboxConfig.hostname || host.hostname()}`]);
  const env = [...(image.Env ?? [])];
  for (const e of config.envs ?? []) env.push(`${e.key ?? ""}=${typeof e.value === "string" ? e.value : Buffer.from(e.value ?? []).toString("utf8")}`);
  spec.process.env = mergeEnv(spec.process.env, env);

  applyMounts(spec, host, config.mounts ?? [], [...podFileMounts(config, input.podFiles), ...(input.extraMounts ?? [])]);

  if (!opts.disableProcMount) {
    spec.linux.maskedPaths = sc?.masked_paths?.length ? [...sc.masked_paths] : [];
    spec.linux.readonlyPaths = sc?.readonly_paths?.length ? [...sc.readonly_paths] : [];
  }
  applyDevices(spec, host, input);
  applyCapabilities(spec, host, sc);

  if (sc?.privileged) {
    if (!sandboxConfig.linux?.security_context?.privileged) throw errInvalidArgument("no privileged container allowed in sandbox");
    // Privileged: every capability, no masked or read-only paths, /sys read-write, all devices.
    const all = host.allCapabilities();
    spec.process.capabilities = { bounding: [...all], effective: [...all], permitted: [...all] };
    spec.linux.maskedPaths = [];
    spec.linux.readonlyPaths = [];
    for (const m of spec.mounts) if (m.type === "sysfs" || m.type === "cgroup") m.options = (m.options ?? []).map((o) => (o === "ro" ? "rw" : o));
    if (!opts.privilegedWithoutHostDevices) {
      for (const d of host.hostDevices()) (spec.linux.devices ??= []).push({ path: d.path, type: d.type, major: d.major, minor: d.minor, fileMode: d.fileMode, uid: d.uid, gid: d.gid });
      spec.linux.resources.devices = [{ allow: true, access: "rwm" }];
    }
  }
  if (sc?.no_new_privs) spec.process.noNewPrivileges = true;
  if (sc?.readonly_rootfs) spec.root.readonly = true;

  if (opts.disableCgroup) delete spec.linux.cgroupsPath;
  else {
    applyResources(spec.linux.resources, host, config.linux?.resources, opts);
    const parent = sandboxConfig.linux?.cgroup_parent;
    if (parent) spec.linux.cgroupsPath = cgroupsPath(parent, input.id);
  }

  Object.assign(spec.annotations, passthroughAnnotations(sandboxConfig.annotations, opts.podAnnotations));
  Object.assign(spec.annotations, passthroughAnnotations(config.annotations, opts.containerAnnotations));

  const res = config.linux?.resources;
  if (res) spec.process.oomScoreAdj = oomScoreAdj(res, host, !!opts.restrictOomScoreAdj);
  spec.linux.namespaces = podNamespaces(sc, input.sandboxPid, input.targetPid ?? input.sandboxPid);
  if (host.cgroupUnified && !sc?.privileged) spec.linux.namespaces.push({ type: "cgroup" });
  Object.assign(spec.annotations, {
    [CriAnnotations.containerType]: "container",
    [CriAnnotations.sandboxId]: input.sandboxId,
    [CriAnnotations.sandboxNamespace]: sandboxConfig.metadata?.namespace ?? "",
    [CriAnnotations.sandboxUid]: sandboxConfig.metadata?.uid ?? "",
    [CriAnnotations.sandboxName]: sandboxConfig.metadata?.name ?? "",
    [CriAnnotations.containerName]: config.metadata?.name ?? "",
    [CriAnnotations.imageName]: input.imageName,
  });

  // User and groups, read from the container's rootfs (containerSpecOpts in containerd).
  let user = userString(sc);
  if (!user) user = image.User ?? "";
  if (user) spec.process.user = resolveUser(user, input.rootfs);
  const primary = spec.process.user;
  const gidsFor = sc?.run_as_username ? sc.run_as_username : String(num(sc?.run_as_user?.value));
  primary.additionalGids = mergeGids(primary.additionalGids ?? [primary.gid], additionalGids(gidsFor, primary.gid, input.rootfs));
  primary.additionalGids = mergeGids(primary.additionalGids, (sc?.supplemental_groups ?? []).map(Number));
  applyApparmor(sc);
  applySeccomp(spec, host, sc, opts.unsetSeccompProfile ?? "");
  return spec;
}

export function mergeGids(a: readonly number[], b: readonly number[]): number[] {
  return [...new Set([...a, ...b])].sort((x, y) => x - y);
}
