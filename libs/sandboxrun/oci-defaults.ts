/**
 * containerd's default unix spec pieces every runc container here starts from, the one spec builder,
 * and the busybox rootfs of a sandbox's own process. Node's own modules only: the shim loads this too,
 * and must stay lean.
 */
import * as fs from "node:fs";
import * as path from "node:path";

/** Paths hidden from a container's /proc and /sys (containerd's default unix spec). */
export const MASKED_PATHS: readonly string[] = ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"];
/** Paths mounted read-only in a container (containerd's default unix spec). */
export const READONLY_PATHS: readonly string[] = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/** The standard container mounts (containerd's default unix spec). */
export function defaultMounts(): Record<string, unknown>[] {
  return [
    { destination: "/proc", type: "proc", source: "proc", options: ["nosuid", "noexec", "nodev"] },
    { destination: "/dev", type: "tmpfs", source: "tmpfs", options: ["nosuid", "strictatime", "mode=755", "size=65536k"] },
    { destination: "/dev/pts", type: "devpts", source: "devpts", options: ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"] },
    { destination: "/dev/shm", type: "tmpfs", source: "shm", options: ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
    { destination: "/dev/mqueue", type: "mqueue", source: "mqueue", options: ["nosuid", "noexec", "nodev"] },
    { destination: "/sys", type: "sysfs", source: "sysfs", options: ["nosuid", "noexec", "nodev", "ro"] },
  ];
}

export interface ContainerSpecInput {
  args: string[];
  env: string[];
  /** Default "/". */
  cwd?: string;
  /** Default root. */
  user?: { uid: number; gid: number };
  terminal?: boolean;
  /** Bounding, effective and permitted capabilities (default none). */
  capabilities?: readonly string[];
  readonlyRootfs?: boolean;
  /** Set only with a UTS namespace of the container's own. */
  hostname?: string;
  annotations: Record<string, string>;
  cgroupsPath: string;
  namespaces: Record<string, unknown>[];
}

/**
 * The one OCI runtime spec builder for runc containers here (containerd's default unix spec): rootfs
 * `rootfs` in the bundle, the default mounts, masked and read-only paths, no device access, no new
 * privileges, and what the caller chooses (process, capabilities, namespaces, annotations, cgroup).
 */
export function containerSpec(o: ContainerSpecInput): Record<string, unknown> {
  const caps = [...(o.capabilities ?? [])];
  return {
    ociVersion: "1.0.2-dev",
    process: {
      terminal: !!o.terminal,
      user: o.user ?? { uid: 0, gid: 0 },
      args: o.args,
      env: o.env,
      cwd: o.cwd || "/",
      capabilities: { bounding: caps, effective: [...caps], permitted: [...caps] },
      rlimits: [{ type: "RLIMIT_NOFILE", hard: 1024, soft: 1024 }],
      noNewPrivileges: true,
    },
    root: { path: "rootfs", readonly: !!o.readonlyRootfs },
    ...(o.hostname ? { hostname: o.hostname } : {}),
    mounts: defaultMounts(),
    annotations: o.annotations,
    linux: {
      resources: { devices: [{ allow: false, access: "rwm" }] },
      cgroupsPath: o.cgroupsPath,
      namespaces: o.namespaces,
      maskedPaths: [...MASKED_PATHS],
      readonlyPaths: [...READONLY_PATHS],
    },
  };
}

export interface SandboxProcessSpecInput {
  /** The sandbox process (pause, or a sleeping busybox). */
  args: string[];
  /** Its PATH. */
  path: string;
  /** The pod's network namespace; a pod with one also gets its own UTS namespace and `hostname`. */
  netns?: string;
  hostname?: string;
  /** Annotations, CRI's container-type "sandbox" and sandbox-id added. */
  annotations: Record<string, string>;
  sandboxId: string;
  cgroupsPath: string;
  /** Share the host's PID or IPC namespace instead of holding the pod's own (the CRI's NODE mode). */
  hostPid?: boolean;
  hostIpc?: boolean;
  /** Kernel parameters set in the pod's namespaces (`linux.sysctl`). */
  sysctl?: Record<string, string>;
}

/**
 * The OCI spec of a sandbox's own process: it holds the pod's PID, IPC and mount namespaces (and UTS and
 * network with a pod network), on a read-only rootfs, with no capabilities.
 */
export function sandboxProcessSpec(o: SandboxProcessSpecInput): Record<string, unknown> {
  const namespaces: Record<string, unknown>[] = [...(o.hostPid ? [] : [{ type: "pid" }]), ...(o.hostIpc ? [] : [{ type: "ipc" }]), { type: "mount" }];
  // Without a network of its own the pod shares the host's network and hostname (as hostNetwork pods do).
  if (o.netns) namespaces.push({ type: "uts" }, { type: "network", path: o.netns });
  const spec = containerSpec({
    args: o.args,
    env: [`PATH=${o.path}`],
    readonlyRootfs: true,
    ...(o.netns && o.hostname ? { hostname: o.hostname } : {}),
    annotations: { ...o.annotations, "io.kubernetes.cri.container-type": "sandbox", "io.kubernetes.cri.sandbox-id": o.sandboxId },
    cgroupsPath: o.cgroupsPath,
    namespaces,
  });
  if (o.sysctl && Object.keys(o.sysctl).length) (spec.linux as Record<string, unknown>).sysctl = { ...o.sysctl };
  return spec;
}

/** Where a static busybox is looked for, in order. */
export const BUSYBOX_CANDIDATES: readonly string[] = ["/bin/busybox", "/usr/bin/busybox"];

/** A sandbox's own process on the busybox rootfs: sleeps forever (as PID 1 of its namespace it ignores SIGTERM). */
export const SANDBOX_SLEEP_ARGS: readonly string[] = ["/bin/busybox", "sleep", "2147483647"];

/** The static busybox to copy: `given`, else the first of BUSYBOX_CANDIDATES that exists; undefined when none. */
export function findBusybox(given?: string): string | undefined {
  return given ?? BUSYBOX_CANDIDATES.find((p) => fs.existsSync(p));
}

/** Fill `rootfs` with a copy of the static busybox `src`, root's passwd and group, and the mount points runc needs. */
export function writeBusyboxRootfs(rootfs: string, src: string): void {
  for (const d of ["bin", "proc", "sys", "dev", "etc", "tmp"]) fs.mkdirSync(path.join(rootfs, d), { recursive: true, mode: 0o755 });
  fs.copyFileSync(src, path.join(rootfs, "bin", "busybox"));
  fs.chmodSync(path.join(rootfs, "bin", "busybox"), 0o755);
  fs.writeFileSync(path.join(rootfs, "etc", "passwd"), "root:x:0:0:root:/:/bin/sh\n");
  fs.writeFileSync(path.join(rootfs, "etc", "group"), "root:x:0:\n");
}
