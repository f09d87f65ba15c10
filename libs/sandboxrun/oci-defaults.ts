/**
 * containerd's default unix spec pieces every runc container here starts from. No imports: the shim
 * loads this too, and must stay lean.
 */

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
}

/**
 * The OCI spec of a sandbox's own process: it holds the pod's PID, IPC and mount namespaces (and UTS and
 * network with a pod network), on a read-only rootfs, with no capabilities.
 */
export function sandboxProcessSpec(o: SandboxProcessSpecInput): Record<string, unknown> {
  const namespaces: Record<string, unknown>[] = [{ type: "pid" }, { type: "ipc" }, { type: "mount" }];
  // Without a network of its own the pod shares the host's network and hostname (as hostNetwork pods do).
  if (o.netns) namespaces.push({ type: "uts" }, { type: "network", path: o.netns });
  return {
    ociVersion: "1.0.2-dev",
    process: {
      terminal: false,
      user: { uid: 0, gid: 0 },
      args: o.args,
      env: [`PATH=${o.path}`],
      cwd: "/",
      capabilities: { bounding: [], effective: [], permitted: [] },
      rlimits: [{ type: "RLIMIT_NOFILE", hard: 1024, soft: 1024 }],
      noNewPrivileges: true,
    },
    root: { path: "rootfs", readonly: true },
    ...(o.netns ? { hostname: o.hostname } : {}),
    mounts: defaultMounts(),
    annotations: { ...o.annotations, "io.kubernetes.cri.container-type": "sandbox", "io.kubernetes.cri.sandbox-id": o.sandboxId },
    linux: {
      resources: { devices: [{ allow: false, access: "rwm" }] },
      cgroupsPath: o.cgroupsPath,
      namespaces,
      maskedPaths: [...MASKED_PATHS],
      readonlyPaths: [...READONLY_PATHS],
    },
  };
}
