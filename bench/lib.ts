/**
 * Benchmark harness: Flotilla (`bin/flotilla up`) and a reference containerd (Debian's package, on
 * temporary roots) side by side in the same run; results are printed as Flotilla/containerd ratios.
 * containerd is only a yardstick here, never a runtime dependency.
 */
import { spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { runCtr, startStack, unmountBelow, waitFor, type CtrOptions, type CtrResult, type Stack } from "../test/harness";

export interface Target {
  name: "flotilla" | "containerd";
  socket: string;
  ctr(args: string[], opts?: CtrOptions): Promise<CtrResult>;
  /** PID of the process that does the work for `service` (containerd: the daemon). */
  pid(service?: string): number | undefined;
  stop(): Promise<void>;
}

export async function startFlotilla(): Promise<Target & { stack: Stack }> {
  // BENCH_FLOTILLA_TOML: extra configuration for the Flotilla side (experiments with settings).
  const stack = await startStack({ logLevel: "warn", extraToml: process.env.BENCH_FLOTILLA_TOML });
  return {
    name: "flotilla",
    socket: stack.socket,
    stack,
    ctr: (a, o) => stack.ctr(a, o),
    pid: (s) => stack.pidOf((s ?? "gateway") as never),
    stop: () => stack.stop(),
  };
}

/** A reference containerd on private roots; `cri`: its CRI plugin enabled with these config tables (else disabled). */
export async function startContainerd(opts: { cri?: string } = {}): Promise<Target> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ctd-"));
  const socket = path.join(dir, "containerd.sock");
  fs.writeFileSync(path.join(dir, "config.toml"), [
    "version = 2",
    `root = "${dir}/root"`,
    `state = "${dir}/state"`,
    ...(opts.cri === undefined ? ['disabled_plugins = ["io.containerd.grpc.v1.cri"]'] : []),
    "[grpc]", `  address = "${socket}"`,
    "[ttrpc]", `  address = "${socket}.ttrpc"`,
    "[debug]", `  address = "${dir}/debug.sock"`, '  level = "warn"',
    opts.cri ?? "",
  ].join("\n"));
  const log = fs.openSync(path.join(dir, "containerd.log"), "a");
  const child: ChildProcess = spawn("containerd", ["--config", path.join(dir, "config.toml")], { stdio: ["ignore", log, log] });
  fs.closeSync(log);
  await waitFor("containerd to serve", async () => ((await runCtr(socket, ["version"])).code === 0 ? true : undefined), 30000, 100);
  return {
    name: "containerd",
    socket,
    ctr: (a, o) => runCtr(socket, a, o),
    pid: () => child.pid,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((r) => child.once("exit", r));
        child.kill("SIGTERM");
        await Promise.race([exited, new Promise((r) => setTimeout(r, 10000))]);
        if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      }
      unmountBelow(dir);
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Run `fn` `n` times (after `warmup` untimed runs); returns the median in ms. */
export async function median(n: number, fn: () => Promise<unknown>, warmup = 2): Promise<number> {
  for (let i = 0; i < warmup; i++) await fn();
  const times: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = process.hrtime.bigint();
    await fn();
    times.push(Number(process.hrtime.bigint() - t) / 1e6);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)]!;
}

/** Peak resident set size (VmHWM) of a process, in MiB. */
export function peakRssMiB(pid: number): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) / 1024 : NaN;
}

/** CPU time (user + system) a process has used so far, in ms; 0 once it is gone. */
export function cpuMs(pid: number | undefined): number {
  if (!pid) return 0;
  try {
    const f = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    const rest = f.slice(f.lastIndexOf(")") + 2).split(" ");
    return (Number(rest[11]) + Number(rest[12])) * 10; // utime, stime in 100 Hz ticks
  } catch {
    return 0;
  }
}

export interface Row {
  benchmark: string;
  unit: string;
  flotilla: number;
  containerd: number;
  /** true when smaller is better (times); the ratio is always flotilla/containerd. */
  lowerIsBetter: boolean;
}

export function report(rows: Row[]): void {
  const line = (cells: string[]): string => cells.map((c, i) => (i === 0 ? c.padEnd(48) : c.padStart(14))).join(" ");
  console.log(line(["benchmark", "flotilla", "containerd", "ratio F/C"]));
  for (const r of rows) {
    const ratio = r.flotilla / r.containerd;
    const verdict = (r.lowerIsBetter ? ratio <= 1 : ratio >= 1) ? "" : " (behind)";
    console.log(line([`${r.benchmark} [${r.unit}]`, r.flotilla.toFixed(2), r.containerd.toFixed(2), ratio.toFixed(2) + verdict]));
  }
}

/** Start both systems, run `fn` against each in turn, stop them. */
export async function sideBySide<T>(fn: (t: Target) => Promise<T>): Promise<{ flotilla: T; containerd: T }> {
  const f = await startFlotilla();
  let fr: T;
  try {
    fr = await fn(f);
  } finally {
    await f.stop();
  }
  const c = await startContainerd();
  let cr: T;
  try {
    cr = await fn(c);
  } finally {
    await c.stop();
  }
  return { flotilla: fr, containerd: cr };
}
