/**
 * CPU, memory and process usage in the CRI's shape from a task's or sandbox's cgroup metrics
 * (`io.containerd.cgroups.v1.Metrics` or `.v2.Metrics`, as the tasks process reports them), the way
 * containerd's CRI derives them (working set = usage - inactive file).
 */
import { unpackAny } from "#libs/proto";
import type { Input } from "#libs/proto/types";

type Num = number | string | undefined | null;
const n = (v: Num): number => Number(v ?? 0);
const u64 = (v: number): { value: number } => ({ value: Math.max(0, v) });

export interface CgroupUsage {
  cpu: Input["runtime.v1.CpuUsage"];
  memory: Input["runtime.v1.MemoryUsage"];
  process: Input["runtime.v1.ProcessUsage"];
}

/** The usage in a metrics Any taken at `timestampNs`; undefined when the Any is of no known type. */
export function cgroupUsage(data: { typeUrl: string; value: Uint8Array } | undefined, timestampNs: bigint): CgroupUsage | undefined {
  if (!data) return undefined;
  const ts = timestampNs.toString();
  const type = data.typeUrl.replace(/^.*\//, "");
  if (type === "io.containerd.cgroups.v1.Metrics") {
    const m = unpackAny<{ cpu?: { usage?: { total?: Num } }; memory?: { total_inactive_file?: Num; rss?: Num; total_rss?: Num; pg_fault?: Num; pg_maj_fault?: Num; usage?: { usage?: Num; limit?: Num } }; pids?: { current?: Num } }>({ type_url: type, value: Buffer.from(data.value) });
    const usage = n(m.memory?.usage?.usage);
    const inactive = n(m.memory?.total_inactive_file);
    const limit = n(m.memory?.usage?.limit);
    return {
      cpu: { timestamp: ts, usage_core_nano_seconds: u64(n(m.cpu?.usage?.total)) },
      memory: {
        timestamp: ts,
        working_set_bytes: u64(usage > inactive ? usage - inactive : 0),
        ...(limit && limit < 2 ** 62 ? { available_bytes: u64(limit - usage) } : {}),
        usage_bytes: u64(usage),
        rss_bytes: u64(n(m.memory?.total_rss ?? m.memory?.rss)),
        page_faults: u64(n(m.memory?.pg_fault)),
        major_page_faults: u64(n(m.memory?.pg_maj_fault)),
      },
      process: { timestamp: ts, process_count: u64(n(m.pids?.current)) },
    };
  }
  if (type === "io.containerd.cgroups.v2.Metrics") {
    const m = unpackAny<{ cpu?: { usage_usec?: Num }; memory?: { usage?: Num; usage_limit?: Num; inactive_file?: Num; anon?: Num; pgfault?: Num; pgmajfault?: Num }; pids?: { current?: Num } }>({ type_url: type, value: Buffer.from(data.value) });
    const usage = n(m.memory?.usage);
    const inactive = n(m.memory?.inactive_file);
    const limit = n(m.memory?.usage_limit);
    return {
      cpu: { timestamp: ts, usage_core_nano_seconds: u64(n(m.cpu?.usage_usec) * 1000) },
      memory: {
        timestamp: ts,
        working_set_bytes: u64(usage > inactive ? usage - inactive : 0),
        ...(limit && limit < 2 ** 62 ? { available_bytes: u64(limit - usage) } : {}),
        usage_bytes: u64(usage),
        rss_bytes: u64(n(m.memory?.anon)),
        page_faults: u64(n(m.memory?.pgfault)),
        major_page_faults: u64(n(m.memory?.pgmajfault)),
      },
      process: { timestamp: ts, process_count: u64(n(m.pids?.current)) },
    };
  }
  return undefined;
}
