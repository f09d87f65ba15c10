/**
 * Issue 6 benchmarks, Flotilla and a reference containerd side by side:
 * - `ctr run --rm IMAGE id true` latency (busybox image pulled from a local registry), and the same
 *   with `--rootfs` (no snapshot);
 * - 50 detached containers: time to start them, `ctr task ls`, kill them all; memory of their shims
 *   per running container (RSS, and PSS, which counts shared pages once); events per second seen by
 *   `ctr events` while starting them.
 */
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { report, startContainerd, startFlotilla, type Row, type Target } from "./lib";
import { startStack } from "../test/harness";
import { startRegistry } from "../test/helpers/registry";
import { buildBusyboxImage, pushImage } from "../test/helpers/image";
import { busyboxRootfs } from "../test/tasks/helpers";

const N = 50;

function cwdOf(pid: number): string {
  try {
    return fs.readlinkSync(`/proc/${pid}/cwd`);
  } catch {
    return "";
  }
}

/** The shims serving containers of `t` (Flotilla's idle warm shims excluded: they serve none). */
export function shimPidsOf(t: Pick<Target, "socket">): number[] {
  const out: number[] = [];
  for (const e of fs.readdirSync("/proc")) {
    const pid = Number(e);
    if (!pid) continue;
    let cmd = "";
    try {
      cmd = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").join(" ");
    } catch {
      continue;
    }
    if (!cmd.includes(t.socket) || !(cmd.includes("containerd-shim") || cmd.includes("dist/services/shim/main.js"))) continue;
    if (cmd.includes(" -warm") && !cwdOf(pid).includes("io.containerd.runtime.v2.task")) continue;
    out.push(pid);
  }
  return out;
}

export function memKiB(pid: number): { rss: number; pss: number } {
  try {
    const t = fs.readFileSync(`/proc/${pid}/smaps_rollup`, "utf8");
    return { rss: Number(/^Rss:\s+(\d+)/m.exec(t)?.[1] ?? 0), pss: Number(/^Pss:\s+(\d+)/m.exec(t)?.[1] ?? 0) };
  } catch {
    return { rss: 0, pss: 0 };
  }
}

async function must(p: Promise<{ code: number; stderr: string }>): Promise<void> {
  const r = await p;
  if (r.code !== 0) throw new Error(r.stderr);
}

interface Result {
  runImage: number;
  runRootfs: number;
  start50: number;
  list50: number;
  kill50: number;
  rssPerContainer: number;
  pssPerContainer: number;
  eventsPerSec: number;
}

const med = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/**
 * Both systems run at once and take turns, iteration by iteration, so a busy machine slows them
 * alike (this host is shared; sequential runs made the ratios swing with the load).
 */
async function interleaved(targets: Target[], n: number, fn: (t: Target, i: number) => Promise<void>, warmup = 2): Promise<number[][]> {
  const times = targets.map(() => [] as number[]);
  for (let i = 0; i < n + warmup; i++) {
    for (let k = 0; k < targets.length; k++) {
      const t0 = performance.now();
      await fn(targets[k]!, i);
      if (i >= warmup) times[k]!.push(performance.now() - t0);
    }
  }
  return times;
}

export async function run(): Promise<Row[]> {
  const reg = await startRegistry();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "flt-bench-tasks-"));
  const rootfs = busyboxRootfs(path.join(dir, "rootfs"));
  const f = await startFlotilla();
  const c = await startContainerd();
  const targets = [f, c];
  // A namespace of this run's own: containerd's shims keep their runc state under /run/containerd/runc/<ns>
  // whatever the daemon's root, so a run that was killed must not collide with the next.
  const ns = `bench-${process.pid}`;
  const ctr = (t: Target, args: string[]): ReturnType<Target["ctr"]> => t.ctr(args, { namespace: ns, timeoutMs: 120_000 });
  try {
    await pushImage(reg, "bench/busybox", "latest", buildBusyboxImage());
    const ref = `${reg.host}/bench/busybox:latest`;
    for (const t of targets) await must(ctr(t, ["images", "pull", "--plain-http", ref]));
    const runImage = await interleaved(targets, 15, (t, i) => must(ctr(t, ["run", "--rm", ref, `ri${i}`, "true"])));
    const runRootfs = await interleaved(targets, 15, (t, i) => must(ctr(t, ["run", "--rm", "--env", "PATH=/bin", "--rootfs", rootfs, `rr${i}`, "true"])));

    const counters = targets.map((t) => {
      const ev = spawn("ctr", ["-a", t.socket, "events"], { stdio: ["ignore", "pipe", "ignore"] });
      const c2 = { ev, n: 0 };
      ev.stdout.on("data", (b: Buffer) => (c2.n += b.toString().split("\n").length - 1));
      return c2;
    });
    await new Promise((r) => setTimeout(r, 300));
    const start = await interleaved(targets, N, (t, k) => must(ctr(t, ["run", "-d", ref, `d${k}`, "sleep", "100000"])), 0);
    const start50 = start.map((xs) => xs.reduce((a, b) => a + b, 0));
    await new Promise((r) => setTimeout(r, 500));
    const eventsPerSec = counters.map((x, k) => x.n / ((start50[k]! + 500) / 1000));
    for (const x of counters) x.ev.kill("SIGKILL");
    const mem = targets.map((t) => shimPidsOf(t).map(memKiB).reduce((a, m) => ({ rss: a.rss + m.rss, pss: a.pss + m.pss }), { rss: 0, pss: 0 }));
    const list = await interleaved(targets, 5, async (t) => {
      const ls = await ctr(t, ["t", "ls"]);
      const running = ls.stdout.split("\n").filter((l) => / RUNNING$/.test(l.trim())).length;
      if (running !== N) throw new Error(`${t.name}: expected ${N} running tasks, got ${running}`);
    }, 1);
    const kill = await interleaved(targets, 1, async (t) => {
      await Promise.all(Array.from({ length: N }, (_, k) => must(ctr(t, ["t", "kill", "-s", "SIGKILL", `d${k}`]))));
      for (;;) {
        const l = await ctr(t, ["t", "ls"]);
        if (!/RUNNING/.test(l.stdout)) break;
        await new Promise((r) => setTimeout(r, 50));
      }
    }, 0);
    for (const t of targets) {
      for (let k = 0; k < N; k++) {
        await ctr(t, ["t", "rm", `d${k}`]);
        await ctr(t, ["c", "rm", `d${k}`]);
      }
    }
    // The same 50 on a Flotilla configured to let one shim serve up to 10 containers per namespace.
    const grouped = await startStack({ logLevel: "warn", extraToml: '[plugins."io.containerd.runtime.v2.task"]\nshim_group_size = 10\n' });
    const g: Target = { name: "flotilla", socket: grouped.socket, ctr: (a, o) => grouped.ctr(a, o), pid: () => undefined, stop: () => grouped.stop() };
    let gStart = 0;
    let gMem = { rss: 0, pss: 0 };
    try {
      await must(ctr(g, ["images", "pull", "--plain-http", ref]));
      const t0 = performance.now();
      for (let k = 0; k < N; k++) await must(ctr(g, ["run", "-d", ref, `d${k}`, "sleep", "100000"]));
      gStart = performance.now() - t0;
      gMem = shimPidsOf(g).map(memKiB).reduce((a, m) => ({ rss: a.rss + m.rss, pss: a.pss + m.pss }), { rss: 0, pss: 0 });
      await Promise.all(Array.from({ length: N }, (_, k) => ctr(g, ["t", "kill", "-s", "SIGKILL", `d${k}`])));
      await new Promise((r) => setTimeout(r, 2000));
      for (let k = 0; k < N; k++) {
        await ctr(g, ["t", "rm", `d${k}`]);
        await ctr(g, ["c", "rm", `d${k}`]);
      }
    } finally {
      await grouped.stop();
    }
    const res = targets.map((_, k): Result => ({
      runImage: med(runImage[k]!),
      runRootfs: med(runRootfs[k]!),
      start50: start50[k]!,
      list50: med(list[k]!),
      kill50: kill[k]![0]!,
      rssPerContainer: mem[k]!.rss / 1024 / N,
      pssPerContainer: mem[k]!.pss / 1024 / N,
      eventsPerSec: eventsPerSec[k]!,
    }));
    const row = (benchmark: string, unit: string, key: keyof Result, lowerIsBetter = true): Row => ({ benchmark, unit, flotilla: res[0]![key], containerd: res[1]![key], lowerIsBetter });
    return [
      row("ctr run --rm IMAGE id true (median of 15)", "ms", "runImage"),
      row("ctr run --rm --rootfs DIR id true (median of 15)", "ms", "runRootfs"),
      row(`start ${N} detached containers (ctr run -d, one after another)`, "ms", "start50"),
      row(`ctr task ls with ${N} running (median of 5)`, "ms", "list50"),
      row(`kill ${N} tasks until all stopped`, "ms", "kill50"),
      row("shim RSS per running container", "MiB", "rssPerContainer"),
      row("shim PSS per running container", "MiB", "pssPerContainer"),
      row(`events/s seen by ctr events while starting ${N}`, "ev/s", "eventsPerSec", false),
      { benchmark: `start ${N} detached, Flotilla shim_group_size=10 (not interleaved)`, unit: "ms", flotilla: gStart, containerd: res[1]!.start50, lowerIsBetter: true },
      { benchmark: "shim RSS per container, Flotilla shim_group_size=10", unit: "MiB", flotilla: gMem.rss / 1024 / N, containerd: res[1]!.rssPerContainer, lowerIsBetter: true },
      { benchmark: "shim PSS per container, Flotilla shim_group_size=10", unit: "MiB", flotilla: gMem.pss / 1024 / N, containerd: res[1]!.pssPerContainer, lowerIsBetter: true },
    ];
  } finally {
    // Containers outlive their daemon (shims keep them): remove whatever a failed run left.
    for (const t of targets) {
      const ls = await ctr(t, ["t", "ls", "-q"]).catch(() => undefined);
      for (const id of ls?.stdout.split("\n").map((x) => x.trim()).filter(Boolean) ?? []) {
        await ctr(t, ["t", "rm", "-f", id]).catch(() => undefined);
        await ctr(t, ["c", "rm", id]).catch(() => undefined);
      }
    }
    await f.stop();
    await c.stop();
    await reg.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

if (require.main === module) {
  run().then(report, (e) => {
    console.error(e);
    process.exit(1);
  });
}
