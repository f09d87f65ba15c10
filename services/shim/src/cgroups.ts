/**
 * A container's cgroup, read straight from cgroupfs: where it is (from /proc/<init pid>/cgroup and the
 * mount table), its statistics as containerd's `io.containerd.cgroups.v1.Metrics` (legacy and hybrid
 * hosts) or `io.containerd.cgroups.v2.Metrics` (unified hosts), and its OOM-kill counter.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type { Obj } from "./pb";

export interface CgroupInfo {
  mode: "v1" | "v2";
  /** v1: controller -> directory; v2: { unified: directory }. */
  dirs: Record<string, string>;
}

interface CgMount {
  dir: string;
  type: "cgroup" | "cgroup2";
  controllers: string[];
}

let mountsCache: CgMount[] | undefined;

function cgroupMounts(): CgMount[] {
  if (mountsCache) return mountsCache;
  const out: CgMount[] = [];
  for (const line of fs.readFileSync("/proc/self/mountinfo", "utf8").split("\n")) {
    const parts = line.split(" ");
    const sep = parts.indexOf("-");
    if (sep < 0) continue;
    const fstype = parts[sep + 1];
    if (fstype !== "cgroup" && fstype !== "cgroup2") continue;
    const dir = parts[4]!;
    const opts = (parts[sep + 3] ?? "").split(",");
    out.push({ dir, type: fstype, controllers: fstype === "cgroup" ? opts.filter((o) => o !== "rw" && o !== "ro" && !o.includes("=")).concat(opts.filter((o) => o.startsWith("name="))) : [] });
  }
  mountsCache = out;
  return out;
}

/** True when the host runs cgroup v1 controllers (legacy or hybrid): containerd then reports v1 metrics. */
export function isLegacy(): boolean {
  return cgroupMounts().some((m) => m.type === "cgroup" && m.controllers.some((c) => c === "memory" || c === "cpu" || c === "pids"));
}

/** The cgroup of a live process. */
export function cgroupOf(pid: number): CgroupInfo | undefined {
  let text: string;
  try {
    text = fs.readFileSync(`/proc/${pid}/cgroup`, "utf8");
  } catch {
    return undefined;
  }
  const mounts = cgroupMounts();
  const legacy = isLegacy();
  const dirs: Record<string, string> = {};
  for (const line of text.trim().split("\n")) {
    const i1 = line.indexOf(":");
    const i2 = line.indexOf(":", i1 + 1);
    if (i1 < 0 || i2 < 0) continue;
    const ctrls = line.slice(i1 + 1, i2);
    const rel = line.slice(i2 + 1);
    if (ctrls === "") {
      const m = mounts.find((x) => x.type === "cgroup2");
      if (m) dirs.unified = path.join(m.dir, rel);
      continue;
    }
    for (const c of ctrls.split(",")) {
      const m = mounts.find((x) => x.type === "cgroup" && x.controllers.includes(c));
      if (m) dirs[c] = path.join(m.dir, rel);
    }
  }
  if (legacy) return { mode: "v1", dirs };
  return dirs.unified ? { mode: "v2", dirs: { unified: dirs.unified } } : undefined;
}

function read(file: string | undefined): string | undefined {
  if (!file) return undefined;
  try {
    return fs.readFileSync(file, "utf8");
  } catch {
    return undefined;
  }
}

function num(file: string | undefined): number {
  const t = read(file)?.trim();
  if (!t || t === "max") return 0;
  const n = Number(t);
  return Number.isFinite(n) ? n : 0;
}

function kv(file: string | undefined): Record<string, number> {
  const out: Record<string, number> = {};
  for (const l of (read(file) ?? "").split("\n")) {
    const [k, v] = l.trim().split(/\s+/);
    if (k && v !== undefined) out[k] = Number(v) || 0;
  }
  return out;
}

const f = (dir: string | undefined, name: string): string | undefined => (dir ? path.join(dir, name) : undefined);

function blkio(dir: string | undefined, name: string): Obj[] {
  const t = read(f(dir, `blkio.${name}`)) ?? read(f(dir, `blkio.throttle.${name}`));
  const out: Obj[] = [];
  for (const l of (t ?? "").split("\n")) {
    const p = l.trim().split(/\s+/);
    if (p.length < 2 || !p[0]!.includes(":")) continue;
    const [major, minor] = p[0]!.split(":").map(Number);
    if (p.length === 3) out.push({ op: p[1], device: "", major, minor, value: Number(p[2]) || 0 });
    else out.push({ op: "", device: "", major, minor, value: Number(p[1]) || 0 });
  }
  return out;
}

export function statsV1(cg: CgroupInfo): Obj {
  const d = cg.dirs;
  const cpuacct = d.cpuacct ?? d.cpu;
  const mem = d.memory;
  const ms = kv(f(mem, "memory.stat"));
  const entry = (prefix: string): Obj => ({
    limit: num(f(mem, `${prefix}.limit_in_bytes`)),
    usage: num(f(mem, `${prefix}.usage_in_bytes`)),
    max: num(f(mem, `${prefix}.max_usage_in_bytes`)),
    failcnt: num(f(mem, `${prefix}.failcnt`)),
  });
  const cstat = kv(f(cpuacct, "cpuacct.stat"));
  const hz = 100;
  const cpuStat = kv(f(d.cpu, "cpu.stat"));
  const oom = kv(f(mem, "memory.oom_control"));
  return {
    pids: d.pids ? { current: num(f(d.pids, "pids.current")), limit: num(f(d.pids, "pids.max")) } : null,
    cpu: {
      usage: {
        total: num(f(cpuacct, "cpuacct.usage")),
        kernel: Math.round(((cstat.system ?? 0) * 1e9) / hz),
        user: Math.round(((cstat.user ?? 0) * 1e9) / hz),
        per_cpu: (read(f(cpuacct, "cpuacct.usage_percpu")) ?? "").trim().split(/\s+/).filter(Boolean).map(Number),
      },
      throttling: { periods: cpuStat.nr_periods ?? 0, throttled_periods: cpuStat.nr_throttled ?? 0, throttled_time: cpuStat.throttled_time ?? 0 },
    },
    memory: mem
      ? {
          cache: ms.cache ?? 0, rss: ms.rss ?? 0, rss_huge: ms.rss_huge ?? 0, mapped_file: ms.mapped_file ?? 0,
          dirty: ms.dirty ?? 0, writeback: ms.writeback ?? 0, pg_pg_in: ms.pgpgin ?? 0, pg_pg_out: ms.pgpgout ?? 0,
          pg_fault: ms.pgfault ?? 0, pg_maj_fault: ms.pgmajfault ?? 0, inactive_anon: ms.inactive_anon ?? 0,
          active_anon: ms.active_anon ?? 0, inactive_file: ms.inactive_file ?? 0, active_file: ms.active_file ?? 0,
          unevictable: ms.unevictable ?? 0, hierarchical_memory_limit: ms.hierarchical_memory_limit ?? 0,
          hierarchical_swap_limit: ms.hierarchical_memsw_limit ?? 0, total_cache: ms.total_cache ?? 0,
          total_rss: ms.total_rss ?? 0, total_rss_huge: ms.total_rss_huge ?? 0, total_mapped_file: ms.total_mapped_file ?? 0,
          total_dirty: ms.total_dirty ?? 0, total_writeback: ms.total_writeback ?? 0, total_pg_pg_in: ms.total_pgpgin ?? 0,
          total_pg_pg_out: ms.total_pgpgout ?? 0, total_pg_fault: ms.total_pgfault ?? 0, total_pg_maj_fault: ms.total_pgmajfault ?? 0,
          total_inactive_anon: ms.total_inactive_anon ?? 0, total_active_anon: ms.total_active_anon ?? 0,
          total_inactive_file: ms.total_inactive_file ?? 0, total_active_file: ms.total_active_file ?? 0,
          total_unevictable: ms.total_unevictable ?? 0,
          usage: entry("memory"), swap: entry("memory.memsw"), kernel: entry("memory.kmem"), kernel_tcp: entry("memory.kmem.tcp"),
        }
      : null,
    blkio: d.blkio
      ? {
          io_service_bytes_recursive: blkio(d.blkio, "io_service_bytes_recursive"),
          io_serviced_recursive: blkio(d.blkio, "io_serviced_recursive"),
          io_queued_recursive: blkio(d.blkio, "io_queued_recursive"),
          io_service_time_recursive: blkio(d.blkio, "io_service_time_recursive"),
          io_wait_time_recursive: blkio(d.blkio, "io_wait_time_recursive"),
          io_merged_recursive: blkio(d.blkio, "io_merged_recursive"),
          io_time_recursive: blkio(d.blkio, "time_recursive"),
          sectors_recursive: blkio(d.blkio, "sectors_recursive"),
        }
      : null,
    memory_oom_control: mem ? { oom_kill_disable: oom.oom_kill_disable ?? 0, under_oom: oom.under_oom ?? 0, oom_kill: oom.oom_kill ?? 0 } : null,
  };
}

export function statsV2(cg: CgroupInfo): Obj {
  const d = cg.dirs.unified;
  const cpu = kv(f(d, "cpu.stat"));
  const ms = kv(f(d, "memory.stat"));
  const ev = kv(f(d, "memory.events"));
  const io: Obj[] = [];
  for (const l of (read(f(d, "io.stat")) ?? "").split("\n")) {
    const p = l.trim().split(/\s+/);
    if (!p[0]?.includes(":")) continue;
    const [major, minor] = p[0].split(":").map(Number);
    const e: Obj = { major, minor, rbytes: 0, wbytes: 0, rios: 0, wios: 0 };
    for (const x of p.slice(1)) {
      const [k, v] = x.split("=");
      if (k && k in e) e[k] = Number(v) || 0;
    }
    io.push(e);
  }
  const memory: Obj = {};
  for (const k of [
    "anon", "file", "kernel_stack", "slab", "sock", "shmem", "file_mapped", "file_dirty", "file_writeback", "anon_thp",
    "inactive_anon", "active_anon", "inactive_file", "active_file", "unevictable", "slab_reclaimable", "slab_unreclaimable",
    "pgfault", "pgmajfault", "workingset_refault", "workingset_activate", "workingset_nodereclaim", "pgrefill", "pgscan",
    "pgsteal", "pgactivate", "pgdeactivate", "pglazyfree", "pglazyfreed", "thp_fault_alloc", "thp_collapse_alloc",
    "workingset_refault_anon", "workingset_refault_file", "workingset_activate_anon", "workingset_activate_file",
  ]) memory[k] = ms[k] ?? 0;
  memory.usage = num(f(d, "memory.current"));
  memory.usage_limit = num(f(d, "memory.max"));
  memory.swap_usage = num(f(d, "memory.swap.current"));
  memory.swap_limit = num(f(d, "memory.swap.max"));
  memory.max_usage = num(f(d, "memory.peak"));
  return {
    pids: { current: num(f(d, "pids.current")), limit: num(f(d, "pids.max")) },
    cpu: {
      usage_usec: cpu.usage_usec ?? 0, user_usec: cpu.user_usec ?? 0, system_usec: cpu.system_usec ?? 0,
      nr_periods: cpu.nr_periods ?? 0, nr_throttled: cpu.nr_throttled ?? 0, throttled_usec: cpu.throttled_usec ?? 0,
      nr_bursts: cpu.nr_bursts ?? 0, burst_usec: cpu.burst_usec ?? 0,
    },
    memory,
    io: { usage: io },
    memory_events: { low: ev.low ?? 0, high: ev.high ?? 0, max: ev.max ?? 0, oom: ev.oom ?? 0, oom_kill: ev.oom_kill ?? 0, oom_group_kill: ev.oom_group_kill ?? 0 },
  };
}

/** The cgroup's OOM-kill count (memory.oom_control on v1, memory.events on v2). */
export function oomKills(cg: CgroupInfo): number {
  if (cg.mode === "v1") return kv(f(cg.dirs.memory, "memory.oom_control")).oom_kill ?? 0;
  return kv(f(cg.dirs.unified, "memory.events")).oom_kill ?? 0;
}

/** True while the cgroup directory still exists. */
export function cgroupExists(cg: CgroupInfo): boolean {
  const d = cg.mode === "v1" ? cg.dirs.memory ?? Object.values(cg.dirs)[0] : cg.dirs.unified;
  return !!d && fs.existsSync(d);
}

/**
 * Move a process into an existing cgroup given by its path (the runc option ShimCgroup): on v1 into
 * that path of every hierarchy where it exists, on v2 into the unified one.
 */
export function joinCgroup(pid: number, rel: string): void {
  const mounts = cgroupMounts();
  const legacy = isLegacy();
  const dirs = mounts.filter((m) => (legacy ? m.type === "cgroup" : m.type === "cgroup2")).map((m) => path.join(m.dir, rel)).filter((d) => fs.existsSync(d));
  if (!dirs.length) throw new Error(`cgroup ${rel} does not exist`);
  for (const d of dirs) fs.writeFileSync(path.join(d, "cgroup.procs"), String(pid));
}
