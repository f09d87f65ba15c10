/**
 * The RuntimeDefault seccomp profile of CRI containers. Flotilla's own profile, with the same intent as
 * the Docker/containerd default: ordinary programs run unchanged, while the system calls that reach
 * past a container's namespaces (kernel modules, kexec, reboot, clock, swap, accounting, keyrings,
 * namespace and mount changes, tracing other processes, BPF) fail with EPERM unless the container
 * holds the capability that licenses them.
 */

export interface SeccompRule { names: string[]; action: string; errnoRet?: number }
export interface SeccompProfile { defaultAction: string; architectures?: string[]; syscalls?: SeccompRule[] }

/** Calls refused to every container. */
const ALWAYS_DENIED = ["add_key", "request_key", "keyctl", "lookup_dcookie", "nfsservctl", "uselib", "userfaultfd", "ustat", "vm86", "vm86old", "create_module", "get_kernel_syms", "query_module", "_sysctl", "sysfs", "kexec_file_load", "kexec_load", "open_by_handle_at"];

/** Calls allowed only with a capability. */
const BY_CAPABILITY: Record<string, string[]> = {
  CAP_SYS_ADMIN: ["mount", "umount", "umount2", "pivot_root", "setns", "unshare", "swapon", "swapoff", "quotactl", "name_to_handle_at", "fanotify_init", "perf_event_open", "bpf", "lookup_dcookie", "fsopen", "fsconfig", "fsmount", "fspick", "move_mount", "open_tree", "setdomainname", "sethostname"],
  CAP_SYS_MODULE: ["init_module", "finit_module", "delete_module"],
  CAP_SYS_BOOT: ["reboot"],
  CAP_SYS_TIME: ["settimeofday", "stime", "clock_settime", "clock_adjtime", "adjtimex"],
  CAP_SYS_PACCT: ["acct"],
  CAP_SYS_RAWIO: ["iopl", "ioperm"],
  CAP_SYS_PTRACE: ["ptrace", "process_vm_readv", "process_vm_writev", "kcmp"],
  CAP_SYS_NICE: ["mbind", "set_mempolicy", "move_pages", "get_mempolicy"],
  CAP_SYSLOG: ["syslog"],
};

/** sethostname and setdomainname only touch the container's own UTS namespace: allowed with SYS_ADMIN only as above. */
const EPERM = 1;

function architectures(): string[] {
  switch (process.arch) {
    case "x64":
      return ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"];
    case "arm64":
      return ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"];
    default:
      return [];
  }
}

/** The profile for a process holding `capabilities` (its bounding set). */
export function defaultSeccompProfile(capabilities: readonly string[]): SeccompProfile {
  const held = new Set(capabilities);
  const denied = new Set(ALWAYS_DENIED);
  for (const [cap, calls] of Object.entries(BY_CAPABILITY)) if (!held.has(cap)) for (const c of calls) denied.add(c);
  if (held.has("CAP_SYS_ADMIN")) denied.delete("lookup_dcookie");
  const archs = architectures();
  return {
    defaultAction: "SCMP_ACT_ALLOW",
    ...(archs.length ? { architectures: archs } : {}),
    syscalls: [{ names: [...denied].sort(), action: "SCMP_ACT_ERRNO", errnoRet: EPERM }],
  };
}
