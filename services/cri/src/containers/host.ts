/**
 * The host facts a CRI container spec needs (SpecHost), read from this machine: hostname, cgroup mode
 * and controllers, device nodes, mount propagation from /proc/self/mountinfo, the kernel's capabilities.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { devMajor, devMinor } from "#libs/sys/linux";
import type { HostDeviceInfo, SpecHost } from "./spec";

/** Capability names by number (capability.h), up to what the kernel reports. */
const CAP_NAMES = ["CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE"];

function device(p: string): HostDeviceInfo | undefined {
  const st = fs.statSync(p);
  const type = st.isCharacterDevice() ? "c" : st.isBlockDevice() ? "b" : undefined;
  if (!type) return undefined;
  return { path: p, type, major: devMajor(st.rdev), minor: devMinor(st.rdev), fileMode: st.mode & 0o7777, uid: st.uid, gid: st.gid };
}

/** Device nodes at `p` (a node, or a directory walked as containerd walks /dev). */
function devicesUnder(p: string, top: boolean): HostDeviceInfo[] {
  const st = fs.statSync(p);
  if (!st.isDirectory()) {
    const d = device(p);
    if (!d && top) throw new Error(`${p} is not a device node`);
    return d ? [d] : [];
  }
  const out: HostDeviceInfo[] = [];
  for (const ent of fs.readdirSync(p, { withFileTypes: true })) {
    const full = path.join(p, ent.name);
    if (ent.isDirectory()) {
      if (["pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"].includes(ent.name)) continue;
      out.push(...devicesUnder(full, false));
    } else if (ent.name !== "console" && (ent.isCharacterDevice() || ent.isBlockDevice())) {
      try {
        const d = device(full);
        if (d) out.push(d);
      } catch {
        /* gone meanwhile */
      }
    }
  }
  return out;
}

function mountinfo(): { mountpoint: string; optional: string }[] {
  const out: { mountpoint: string; optional: string }[] = [];
  for (const line of fs.readFileSync("/proc/self/mountinfo", "utf8").split("\n")) {
    if (!line) continue;
    const [head] = line.split(" - ");
    const f = head!.split(" ");
    out.push({ mountpoint: f[4]!.replace(/\\(\d{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8))), optional: f.slice(6).join(" ") });
  }
  return out;
}

/** cgroup v2: whether this process's own cgroup has the control file `name`. */
function ownCgroupHas(name: string): boolean {
  try {
    const line = fs.readFileSync("/proc/self/cgroup", "utf8").split("\n").find((l) => l.startsWith("0::"));
    return !!line && fs.existsSync(path.join("/sys/fs/cgroup", line.slice(3), name));
  } catch {
    return false;
  }
}

export function hostSpecFacts(): SpecHost {
  const unified = (() => {
    try {
      return fs.existsSync("/sys/fs/cgroup/cgroup.controllers");
    } catch {
      return false;
    }
  })();
  const swap = unified ? ownCgroupHas("memory.swap.max") : fs.existsSync("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes");
  const hugetlb = unified ? (fs.existsSync("/sys/fs/cgroup/cgroup.controllers") && fs.readFileSync("/sys/fs/cgroup/cgroup.controllers", "utf8").includes("hugetlb")) : fs.existsSync("/sys/fs/cgroup/hugetlb");
  // containerd's "all capabilities" are those this process holds (its effective set), not the kernel's list.
  const held = (() => {
    const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(fs.readFileSync("/proc/self/status", "utf8"));
    const mask = m ? BigInt("0x" + m[1]) : 0n;
    return CAP_NAMES.filter((_n, i) => (mask >> BigInt(i)) & 1n).map((c) => `CAP_${c}`);
  })();
  return {
    hostname: () => os.hostname(),
    cgroupUnified: unified,
    swapAvailable: swap,
    hugetlbAvailable: hugetlb,
    seccompEnabled: /^Seccomp:/m.test(fs.readFileSync("/proc/self/status", "utf8")),
    currentOomScoreAdj: () => Number(fs.readFileSync("/proc/self/oom_score_adj", "utf8").trim()),
    prepareHostPath(p) {
      if (!fs.existsSync(p)) fs.mkdirSync(p, { recursive: true, mode: 0o755 });
      return fs.realpathSync(p);
    },
    mountPropagationOf(p) {
      // The longest mount point that is `p` or one of its parents.
      let best = { mountpoint: "/", optional: "" };
      for (const m of mountinfo()) {
        if (p === m.mountpoint || p.startsWith(m.mountpoint === "/" ? "/" : m.mountpoint + "/")) {
          if (m.mountpoint.length >= best.mountpoint.length) best = m;
        }
      }
      return best;
    },
    devicesAt: (p) => devicesUnder(fs.realpathSync(p), true),
    hostDevices: () => devicesUnder("/dev", false),
    allCapabilities: () => [...held],
    readProfile: (p) => fs.readFileSync(p, "utf8"),
  };
}
