/**
 * The cgroup v2 reader of the tasks process's container metrics. This host mounts cgroup v1 (the stack
 * tests in metrics.test.ts read real v1 cgroups of real containers), so the v2 families are checked here
 * on a directory holding v2 interface files in the kernel's formats (Documentation/admin-guide/cgroup-v2),
 * at the path /proc/<pid>/cgroup gives for this process.
 */
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { test } from "node:test";
import { Registry } from "prom-client";
import { cgroupMounts, registerContainerMetrics, V1_FAMILIES, V2_FAMILIES } from "#services/tasks/src/metrics";

const FILES: Record<string, string> = {
  "cpu.stat": "usage_usec 123456\nuser_usec 100000\nsystem_usec 23456\nnr_periods 7\nnr_throttled 2\nthrottled_usec 900\n",
  "io.stat": "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n253:1 rbytes=10 wbytes=20 rios=3 wios=4 dbytes=0 dios=0\n",
  "memory.current": "2097152\n",
  "memory.max": "max\n",
  "memory.swap.current": "0\n",
  "memory.swap.max": "1048576\n",
  "memory.stat": "anon 1000\nfile 2000\nkernel_stack 16384\nslab 300\nsock 0\nshmem 0\nfile_mapped 400\nfile_dirty 0\nfile_writeback 0\nanon_thp 0\ninactive_anon 10\nactive_anon 20\ninactive_file 30\nactive_file 40\nunevictable 0\nslab_reclaimable 100\nslab_unreclaimable 200\npgfault 5000\npgmajfault 3\nworkingset_refault 0\nworkingset_activate 0\nworkingset_nodereclaim 0\npgrefill 0\npgscan 0\npgsteal 0\npgactivate 0\npgdeactivate 0\npglazyfree 0\npglazyfreed 0\nthp_fault_alloc 0\nthp_collapse_alloc 0\n",
  "memory.events": "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n",
  "pids.current": "3\n",
  "pids.max": "max\n",
};

test("cgroup v2: containerd's families, units and labels from a task's cgroup files", async () => {
  const own = /^0::(.*)$/m.exec(fs.readFileSync("/proc/self/cgroup", "utf8"))?.[1] ?? "/";
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "flt-cg2-"));
  try {
    const dir = path.join(root, own);
    fs.mkdirSync(dir, { recursive: true });
    for (const [f, text] of Object.entries(FILES)) fs.writeFileSync(path.join(dir, f), text);
    const mounts = cgroupMounts(`30 23 0:26 / ${root} rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n`);
    assert.equal(mounts.v1.size, 0);
    const registry = new Registry();
    registerContainerMetrics(registry, { tasks: async () => [{ namespace: "ns1", id: "c1", pid: async () => process.pid }] }, mounts);
    const text = await registry.metrics();
    const value = (series: string): number => {
      const l = text.split("\n").find((x) => x.startsWith(series));
      assert.ok(l, series);
      return Number(l.slice(l.lastIndexOf(" ") + 1));
    };
    const id = 'container_id="c1",namespace="ns1"';
    assert.equal(value(`container_cpu_usage_usec_microseconds{${id}}`), 123456);
    assert.equal(value(`container_cpu_user_usec_microseconds{${id}}`), 100000);
    assert.equal(value(`container_cpu_system_usec_microseconds{${id}}`), 23456);
    assert.equal(value(`container_cpu_nr_periods_total{${id}}`), 7);
    assert.equal(value(`container_cpu_nr_throttled_total{${id}}`), 2);
    assert.equal(value(`container_cpu_throttled_usec_microseconds{${id}}`), 900);
    assert.equal(value(`container_io_rbytes_bytes{${id},major="8",minor="0"}`), 4096);
    assert.equal(value(`container_io_wios_total{${id},major="253",minor="1"}`), 4);
    assert.equal(value(`container_memory_usage_bytes{${id}}`), 2097152);
    assert.equal(value(`container_memory_usage_limit_bytes{${id}}`), 2 ** 64, "max is 2^64-1, as containerd reports it");
    assert.equal(value(`container_memory_swap_limit_bytes{${id}}`), 1048576);
    assert.equal(value(`container_memory_kernel_stack_bytes{${id}}`), 16384);
    assert.equal(value(`container_memory_pgmajfault_bytes{${id}}`), 3);
    assert.equal(value(`container_memory_oom_total{${id}}`), 1);
    assert.equal(value(`container_pids_current{${id}}`), 3);
    assert.equal(value(`container_pids_limit{${id}}`), 2 ** 64);
    // Every v2 family is exposed, with help and type, and none of v1's.
    for (const f of V2_FAMILIES) {
      assert.match(text, new RegExp(`^# HELP ${f.name} `, "m"), f.name);
      assert.match(text, new RegExp(`^# TYPE ${f.name} gauge$`, "m"), f.name);
    }
    assert.equal(V2_FAMILIES.length, 48);
    assert.doesNotMatch(text, /container_memory_total_rss_bytes|container_blkio_/);
    assert.equal(new Set(V1_FAMILIES.map((f) => f.name)).size, V1_FAMILIES.length, "v1 family names are distinct");
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});
