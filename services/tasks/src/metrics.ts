/**
 * Per-container cgroup metrics on the tasks process's metrics endpoint (`/v1/metrics`, as containerd
 * serves them, and `/metrics`): the `container_*` gauge families of containerd 1.6's cgroup metrics,
 * with the same names, units and labels (`container_id`, `namespace`, then per-family ones), read at
 * scrape time from each running task's cgroup.
 *
 * A task's cgroup is found from its init process (`/proc/<pid>/cgroup`, the pid from the shim's State),
 * so it does not matter how the runtime named it (cgroupfs or systemd paths). The host decides the
 * flavour: cgroup v1 when the memory controller is mounted as v1 (hybrid hosts included), v2 otherwise.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type { Registry } from "prom-client";
import { registerGaugeFamilies, type GaugeSample } from "#libs/metrics";

/** The tasks a scrape covers: namespace, container id, and a way to learn the init pid (0 when none). */
export interface TaskSource {
  tasks(): Promise<{ namespace: string; id: string; pid(): Promise<number> }[]>;
}

type Family = { name: string; help: string };
const fam = (name: string, unit: string, help: string): Family => ({ name: `container_${name}_${unit}`, help });

// ---- cgroup v2 -------------------------------------------------------------------------------------

const V2_CPU: [string, string, string, string][] = [
  ["usage_usec", "cpu_usage_usec", "microseconds", "Total cpu usage (cgroup v2)"],
  ["user_usec", "cpu_user_usec", "microseconds", "Current cpu usage in user space (cgroup v2)"],
  ["system_usec", "cpu_system_usec", "microseconds", "Current cpu usage in kernel space (cgroup v2)"],
  ["nr_periods", "cpu_nr_periods", "total", "Current cpu number of periods (only if controller is enabled)"],
  ["nr_throttled", "cpu_nr_throttled", "total", "Total number of times tasks have been throttled (only if controller is enabled)"],
  ["throttled_usec", "cpu_throttled_usec", "microseconds", "Total time duration for which tasks have been throttled. (only if controller is enabled)"],
];
const V2_IO: [string, string, string, string][] = [
  ["rbytes", "io_rbytes", "bytes", "IO bytes read"],
  ["wbytes", "io_wbytes", "bytes", "IO bytes written"],
  ["rios", "io_rios", "total", "Number of read IOs"],
  ["wios", "io_wios", "total", "Number of write IOs"],
];
const V2_MEMORY_FILES: [string, string, string][] = [
  ["memory.current", "memory_usage", "Current memory usage (cgroup v2)"],
  ["memory.max", "memory_usage_limit", "Current memory usage limit (cgroup v2)"],
  ["memory.swap.current", "memory_swap_usage", "Current swap usage (cgroup v2)"],
  ["memory.swap.max", "memory_swap_limit", "Current swap usage limit (cgroup v2)"],
];
const V2_MEMORY_STAT = [
  "file_mapped", "file_dirty", "file_writeback", "pgactivate", "pgdeactivate", "pgfault", "pgmajfault", "pglazyfree", "pgrefill",
  "pglazyfreed", "pgscan", "pgsteal", "inactive_anon", "active_anon", "inactive_file", "active_file", "unevictable", "anon", "file",
  "kernel_stack", "slab", "sock", "shmem", "anon_thp", "slab_reclaimable", "slab_unreclaimable", "workingset_refault",
  "workingset_activate", "workingset_nodereclaim", "thp_fault_alloc", "thp_collapse_alloc",
];
const OOM = fam("memory_oom", "total", "The number of times a container has received an oom event");

export const V2_FAMILIES: Family[] = [
  ...V2_CPU.map(([, n, u, h]) => fam(n, u, h)),
  ...V2_IO.map(([, n, u, h]) => fam(n, u, h)),
  ...V2_MEMORY_FILES.map(([, n, h]) => fam(n, "bytes", h)),
  ...V2_MEMORY_STAT.map((k) => fam(`memory_${k}`, "bytes", `The ${k} amount`)),
  OOM,
  fam("pids", "limit", "The limit to the number of pids allowed (cgroup v2)"),
  fam("pids", "current", "The current number of pids (cgroup v2)"),
];

// ---- cgroup v1 -------------------------------------------------------------------------------------

/** blkio files (without `blkio.` and `_recursive`) and the family each feeds. */
const V1_BLKIO: [string, string, string, string][] = [
  ["io_merged", "blkio_io_merged_recursive", "total", "The blkio io merged recursive"],
  ["io_queued", "blkio_io_queued_recursive", "total", "The blkio io queued recursive"],
  ["io_service_bytes", "blkio_io_service_bytes_recursive", "bytes", "The blkio io service bytes recursive"],
  ["io_service_time", "blkio_io_service_time_recursive", "total", "The blkio io service time recursive"],
  ["io_serviced", "blkio_io_serviced_recursive", "total", "The blkio io serviced recursive"],
  ["time", "blkio_io_time_recursive", "total", "The blkio io time recursive"],
  ["sectors", "blkio_sectors_recursive", "total", "The blkio sectors recursive"],
];
const V1_CPU: [string, string, string][] = [
  ["cpu_total", "nanoseconds", "The total cpu time"],
  ["cpu_kernel", "nanoseconds", "The total kernel cpu time"],
  ["cpu_user", "nanoseconds", "The total user cpu time"],
  ["per_cpu", "nanoseconds", "The total cpu time per cpu"],
  ["cpu_throttle_periods", "total", "The total cpu throttle periods"],
  ["cpu_throttled_periods", "total", "The total cpu throttled periods"],
  ["cpu_throttled_time", "nanoseconds", "The total cpu throttled time"],
];
const V1_HUGETLB: [string, string, string, string][] = [
  ["usage_in_bytes", "hugetlb_usage", "bytes", "The hugetlb usage"],
  ["failcnt", "hugetlb_failcnt", "total", "The hugetlb failcnt"],
  ["max_usage_in_bytes", "hugetlb_max", "bytes", "The hugetlb maximum usage"],
];
/** memory.stat keys exposed as `container_memory_<key>_bytes`. */
const V1_MEMORY_STAT = [
  "cache", "rss", "rss_huge", "mapped_file", "dirty", "writeback", "pgpgin", "pgpgout", "pgfault", "pgmajfault", "inactive_anon",
  "active_anon", "inactive_file", "active_file", "unevictable", "hierarchical_memory_limit", "hierarchical_memsw_limit",
  "total_cache", "total_rss", "total_rss_huge", "total_mapped_file", "total_dirty", "total_writeback", "total_pgpgin",
  "total_pgpgout", "total_pgfault", "total_pgmajfault", "total_inactive_anon", "total_active_anon", "total_inactive_file",
  "total_active_file", "total_unevictable",
];
const v1StatHelp = (k: string): string => (/^(total_)?(cache|rss|rss_huge|mapped_file)$/.test(k) ? `The ${k} amount used` : `The ${k} amount`);
/** Memory counters per module: the file prefix (`memory.`, `memory.memsw.`, ...) and the family name part. */
const V1_MEMORY_MODULES: [string, string, string][] = [
  ["", "usage", ""],
  ["memsw.", "swap", "swap "],
  ["kmem.", "kernel", "kernel "],
  ["kmem.tcp.", "kerneltcp", "kerneltcp "],
];
const V1_MEMORY_ENTRIES: [string, string, string, (m: string) => string][] = [
  ["failcnt", "failcnt", "total", (m) => `The ${m || "usage "}failcnt`],
  ["limit_in_bytes", "limit", "bytes", (m) => (m ? `The ${m}limit` : "The memory limit")],
  ["max_usage_in_bytes", "max", "bytes", (m) => (m ? `The ${m}maximum usage` : "The memory maximum usage")],
  ["usage_in_bytes", "usage", "bytes", (m) => (m ? `The ${m}usage` : "The memory usage")],
];

export const V1_FAMILIES: Family[] = [
  ...V1_BLKIO.map(([, n, u, h]) => fam(n, u, h)),
  ...V1_CPU.map(([n, u, h]) => fam(n, u, h)),
  ...V1_HUGETLB.map(([, n, u, h]) => fam(n, u, h)),
  ...V1_MEMORY_STAT.map((k) => fam(`memory_${k}`, "bytes", v1StatHelp(k))),
  ...V1_MEMORY_MODULES.flatMap(([, part, helpPart]) => V1_MEMORY_ENTRIES.map(([, e, u, h]) => fam(`memory_${part}_${e}`, u, h(helpPart)))),
  OOM,
  fam("pids", "limit", "The limit to the number of pids allowed"),
  fam("pids", "current", "The current number of pids"),
];

// ---- reading ---------------------------------------------------------------------------------------

/** 2^64 - 1, what containerd reports for an unlimited ("max") v2 value. */
const UNLIMITED = 18446744073709551615;
/** USER_HZ: the unit of cpuacct.stat. */
const CLOCK_TICKS = 100;

function read(file: string): string | undefined {
  try {
    return fs.readFileSync(file, "utf8");
  } catch {
    return undefined;
  }
}

function readNumber(file: string, max = UNLIMITED): number | undefined {
  const s = read(file)?.trim();
  if (s === undefined || s === "") return undefined;
  if (s === "max") return max;
  const n = Number(s);
  return Number.isFinite(n) ? n : undefined;
}

/** `key value` lines (memory.stat, cpu.stat, memory.events, cpuacct.stat). */
function readKV(file: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of (read(file) ?? "").split("\n")) {
    const [k, v] = line.split(" ");
    if (k && v !== undefined && Number.isFinite(Number(v))) out.set(k, Number(v));
  }
  return out;
}

/** Where the host mounts its cgroup hierarchies. */
export interface CgroupMounts {
  /** v1 controller -> mount point and the cgroup path it is mounted at. */
  v1: Map<string, { dir: string; root: string }>;
  v2?: { dir: string; root: string };
}

export function cgroupMounts(mountinfo = read("/proc/self/mountinfo") ?? ""): CgroupMounts {
  const v1 = new Map<string, { dir: string; root: string }>();
  let v2: { dir: string; root: string } | undefined;
  for (const line of mountinfo.split("\n")) {
    const f = line.split(" ");
    const sep = f.indexOf("-");
    if (sep < 0) continue;
    const [fstype, , superOpts = ""] = f.slice(sep + 1);
    const root = f[3]!;
    const dir = f[4]!;
    if (fstype === "cgroup2") v2 ??= { dir, root };
    else if (fstype === "cgroup") for (const o of superOpts.split(",")) if (o !== "rw" && o !== "ro" && !o.includes("=")) v1.set(o, { dir, root });
  }
  return { v1, v2 };
}

/** A path from /proc/<pid>/cgroup under a mount of the cgroup at `root`. */
function under(m: { dir: string; root: string }, p: string): string {
  const rel = m.root !== "/" && (p === m.root || p.startsWith(m.root + "/")) ? p.slice(m.root.length) : p;
  return path.join(m.dir, rel);
}

/** /proc/<pid>/cgroup as controller -> path ("" for the v2 line). */
function procCgroups(pid: number): Map<string, string> | undefined {
  const text = read(`/proc/${pid}/cgroup`);
  if (text === undefined) return undefined;
  const out = new Map<string, string>();
  for (const line of text.split("\n")) {
    const m = /^\d+:([^:]*):(.*)$/.exec(line);
    if (!m) continue;
    if (m[1] === "") out.set("", m[2]!);
    else for (const c of m[1]!.split(",")) out.set(c.replace(/^name=/, ""), m[2]!);
  }
  return out;
}

type Add = (family: string, value: number | undefined, extra?: Record<string, string>) => void;

function collectV2(dir: string, add: Add): void {
  const cpu = readKV(path.join(dir, "cpu.stat"));
  for (const [k, n, u] of V2_CPU) add(`container_${n}_${u}`, cpu.get(k) ?? 0);
  for (const line of (read(path.join(dir, "io.stat")) ?? "").split("\n")) {
    const [dev, ...kvs] = line.trim().split(/\s+/);
    const mm = dev ? /^(\d+):(\d+)$/.exec(dev) : null;
    if (!mm) continue;
    const vals = new Map(kvs.map((kv) => kv.split("=") as [string, string]));
    for (const [k, n, u] of V2_IO) add(`container_${n}_${u}`, Number(vals.get(k) ?? 0), { major: mm[1]!, minor: mm[2]! });
  }
  for (const [file, n] of V2_MEMORY_FILES) add(`container_${n}_bytes`, readNumber(path.join(dir, file)) ?? 0);
  const stat = readKV(path.join(dir, "memory.stat"));
  for (const k of V2_MEMORY_STAT) add(`container_memory_${k}_bytes`, stat.get(k) ?? 0);
  add(OOM.name, readKV(path.join(dir, "memory.events")).get("oom") ?? 0);
  add("container_pids_limit", readNumber(path.join(dir, "pids.max")) ?? 0);
  add("container_pids_current", readNumber(path.join(dir, "pids.current")) ?? 0);
}

/** /proc/partitions as "major:minor" -> /dev/name. */
function partitions(): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of (read("/proc/partitions") ?? "").split("\n").slice(2)) {
    const f = line.trim().split(/\s+/);
    if (f.length >= 4 && !out.has(`${f[0]}:${f[1]}`)) out.set(`${f[0]}:${f[1]}`, `/dev/${f[3]}`);
  }
  return out;
}

/** blkio entries `MAJ:MIN [Op] value` (the closing `Total n` line has no device and is skipped). */
function blkioEntries(file: string): { major: string; minor: string; op: string; value: number }[] {
  const out: { major: string; minor: string; op: string; value: number }[] = [];
  for (const line of (read(file) ?? "").split("\n")) {
    const f = line.trim().split(/[\s:]+/);
    if (f.length < 3 || !/^\d+$/.test(f[0]!)) continue;
    out.push({ major: f[0]!, minor: f[1]!, op: f.length >= 4 ? f[2]! : "", value: Number(f[f.length - 1]) });
  }
  return out;
}

function collectV1(dirs: Map<string, string>, add: Add): void {
  const blkio = dirs.get("blkio");
  if (blkio) {
    const devices = partitions();
    const emit = (family: string, file: string): number => {
      const entries = blkioEntries(path.join(blkio, file));
      for (const e of entries) add(family, e.value, { op: e.op, device: devices.get(`${e.major}:${e.minor}`) ?? "", major: e.major, minor: e.minor });
      return entries.length;
    };
    // The CFQ files when the kernel has them and they say something; else the throttle files.
    let n = 0;
    if (fs.existsSync(path.join(blkio, "blkio.io_serviced_recursive"))) for (const [f, name, u] of V1_BLKIO) n += emit(`container_${name}_${u}`, `blkio.${f}_recursive`);
    if (n === 0) {
      emit("container_blkio_io_serviced_recursive_total", "blkio.throttle.io_serviced");
      emit("container_blkio_io_service_bytes_recursive_bytes", "blkio.throttle.io_service_bytes");
    }
  }
  const cpuacct = dirs.get("cpuacct");
  if (cpuacct) {
    add("container_cpu_total_nanoseconds", readNumber(path.join(cpuacct, "cpuacct.usage")) ?? 0);
    const st = readKV(path.join(cpuacct, "cpuacct.stat"));
    add("container_cpu_kernel_nanoseconds", ((st.get("system") ?? 0) * 1e9) / CLOCK_TICKS);
    add("container_cpu_user_nanoseconds", ((st.get("user") ?? 0) * 1e9) / CLOCK_TICKS);
    (read(path.join(cpuacct, "cpuacct.usage_percpu")) ?? "").trim().split(/\s+/).filter(Boolean).forEach((v, i) => add("container_per_cpu_nanoseconds", Number(v), { cpu: String(i) }));
  }
  const cpu = dirs.get("cpu");
  if (cpu) {
    const st = readKV(path.join(cpu, "cpu.stat"));
    add("container_cpu_throttle_periods_total", st.get("nr_periods") ?? 0);
    add("container_cpu_throttled_periods_total", st.get("nr_throttled") ?? 0);
    add("container_cpu_throttled_time_nanoseconds", st.get("throttled_time") ?? 0);
  }
  const hugetlb = dirs.get("hugetlb");
  if (hugetlb) {
    let files: string[] = [];
    try {
      files = fs.readdirSync(hugetlb);
    } catch {
      /* gone */
    }
    for (const f of files) {
      const m = /^hugetlb\.([^.]+)\.usage_in_bytes$/.exec(f);
      if (!m) continue;
      for (const [file, n, u] of V1_HUGETLB) add(`container_${n}_${u}`, readNumber(path.join(hugetlb, `hugetlb.${m[1]}.${file}`)) ?? 0, { page: m[1]! });
    }
  }
  const memory = dirs.get("memory");
  if (memory) {
    const st = readKV(path.join(memory, "memory.stat"));
    for (const k of V1_MEMORY_STAT) add(`container_memory_${k}_bytes`, st.get(k) ?? 0);
    for (const [prefix, part] of V1_MEMORY_MODULES) {
      for (const [file, e, u] of V1_MEMORY_ENTRIES) add(`container_memory_${part}_${e}_${u}`, readNumber(path.join(memory, `memory.${prefix}${file}`)) ?? 0);
    }
    add(OOM.name, readKV(path.join(memory, "memory.oom_control")).get("oom_kill") ?? 0);
  }
  const pids = dirs.get("pids");
  if (pids) {
    add("container_pids_limit", readNumber(path.join(pids, "pids.max"), 0) ?? 0);
    add("container_pids_current", readNumber(path.join(pids, "pids.current")) ?? 0);
  }
}

const V1_CONTROLLERS = ["blkio", "cpu", "cpuacct", "hugetlb", "memory", "pids"];

/** The samples of one task's cgroup, found from its init pid. */
export function collectCgroup(mounts: CgroupMounts, pid: number, add: Add): boolean {
  const cg = procCgroups(pid);
  if (!cg) return false;
  if (mounts.v1.has("memory")) {
    const dirs = new Map<string, string>();
    for (const c of V1_CONTROLLERS) {
      const m = mounts.v1.get(c);
      const p = cg.get(c);
      if (m && p !== undefined) dirs.set(c, under(m, p));
    }
    collectV1(dirs, add);
    return true;
  }
  const p = cg.get("");
  if (!mounts.v2 || p === undefined) return false;
  collectV2(under(mounts.v2, p), add);
  return true;
}

/** Register the container families of this host's cgroup flavour with `registry`, read from `source` at each scrape. */
export function registerContainerMetrics(registry: Registry, source: TaskSource, mounts = cgroupMounts()): void {
  const families = mounts.v1.has("memory") ? V1_FAMILIES : V2_FAMILIES;
  registerGaugeFamilies(registry, families, async () => {
    const out = new Map<string, GaugeSample[]>();
    const tasks = await source.tasks();
    await Promise.all(
      tasks.map(async (t) => {
        const pid = await t.pid().catch(() => 0);
        if (!pid) return;
        const samples: [string, GaugeSample][] = [];
        const ok = collectCgroup(mounts, pid, (family, value, extra) => {
          if (value !== undefined) samples.push([family, { labels: { container_id: t.id, namespace: t.namespace, ...extra }, value }]);
        });
        // The process may have exited while its files were read: nothing from a pid no longer there.
        if (!ok || !fs.existsSync(`/proc/${pid}`)) return;
        for (const [family, s] of samples) {
          let list = out.get(family);
          if (!list) out.set(family, (list = []));
          list.push(s);
        }
      }),
    );
    return out;
  });
}
