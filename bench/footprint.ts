/**
 * Memory footprint (issue 17), Flotilla side by side with a reference containerd in the same run:
 * - the stack's start-up: from spawning `bin/flotilla up` (containerd: spawning the daemon) to the first
 *   successful `ctr version`, and the CPU time all its processes used until then (less noisy than the
 *   wall time on a shared host);
 * - the same workload on both through `ctr`, repeated (default 3 times): pull a ~100 MB 5-layer image and a
 *   6,000-file image from a loopback registry, 20 `ctr run --rm`, remove both images (`--sync`); after each
 *   repeat and a few idle seconds, RSS and PSS (/proc/PID/smaps_rollup) of every process: each Flotilla
 *   service, the supervisor, nats-server and idle warm shims, against containerd's daemon; totals per repeat
 *   show whether memory comes back; each repeat's wall time and the CPU time its long-lived processes
 *   used (shims and runc excluded on both sides) show what a memory setting costs in time;
 * - the shim per container: N detached containers on each side, RSS/PSS per shim (Flotilla's shim against
 *   containerd-shim-runc-v2).
 * PSS counts a page shared by k processes as 1/k to each: Node processes from other programs on this host
 * share the node binary with Flotilla's and lower its PSS a little (containerd's Go binary shares nothing).
 *
 *   npm run bench footprint
 *   node dist/bench/footprint.js [--repeats N] [--runs N] [--shims N] [--idle-ms N] [--big-mib N] [--files N]
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { cpuMs, report, startContainerd, type Row, type Target } from "./lib";
import { memKiB, shimPidsOf } from "./tasks";
import { runCtr, sleep, startStack, type Stack } from "../test/harness";
import { buildBusyboxImage, startRegistry } from "../test/images/registry";
import { SERVICE_NAMES } from "../libs/config";

interface Args {
  repeats: number;
  runs: number;
  shims: number;
  idleMs: number;
  bigMiB: number;
  files: number;
}

function parseArgs(argv: string[]): Args {
  const a: Args = { repeats: 3, runs: 20, shims: 5, idleMs: 5000, bigMiB: 100, files: 6000 };
  const num = (i: number): number => Number(argv[i]);
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--repeats") a.repeats = num(++i);
    else if (argv[i] === "--runs") a.runs = num(++i);
    else if (argv[i] === "--shims") a.shims = num(++i);
    else if (argv[i] === "--idle-ms") a.idleMs = num(++i);
    else if (argv[i] === "--big-mib") a.bigMiB = num(++i);
    else if (argv[i] === "--files") a.files = num(++i);
  }
  return a;
}

const NS = "bench";

async function must(t: Target, args: string[]): Promise<string> {
  const r = await t.ctr(args, { namespace: NS, timeoutMs: 600000 });
  if (r.code !== 0) throw new Error(`${t.name}: ctr ${args.join(" ")}: ${r.stderr}`);
  return r.stdout;
}

/** The PID of `bin/flotilla up` for this stack (the supervisor: its command line names the stack's config). */
function supervisorPid(stack: Stack): number | undefined {
  for (const e of fs.readdirSync("/proc")) {
    const pid = Number(e);
    if (!pid) continue;
    try {
      const argv = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
      if (argv.some((x) => x.endsWith("bin/flotilla")) && argv.includes("up") && argv.includes(stack.configFile)) return pid;
    } catch {
      /* gone */
    }
  }
  return undefined;
}

/** Flotilla's idle warm shims (started ahead of time for this stack, serving no container yet). */
function warmShimPids(stack: Stack, serving: number[]): number[] {
  const out: number[] = [];
  for (const e of fs.readdirSync("/proc")) {
    const pid = Number(e);
    if (!pid || serving.includes(pid)) continue;
    try {
      const cmd = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").join(" ");
      if (cmd.includes("dist/services/shim/main.js") && cmd.includes(" -warm") && cmd.includes(stack.dir + "/")) out.push(pid);
    } catch {
      /* gone */
    }
  }
  return out;
}

export interface Proc {
  name: string;
  pids: number[];
}

interface Sample {
  name: string;
  rss: number;
  pss: number;
}

/** RSS and PSS (KiB) of each named process (a group of PIDs is summed: warm shims). */
function sample(procs: Proc[]): Sample[] {
  return procs.map((p) => p.pids.map(memKiB).reduce((a, m) => ({ name: p.name, rss: a.rss + m.rss, pss: a.pss + m.pss }), { name: p.name, rss: 0, pss: 0 }));
}

const mib = (kib: number): string => (kib / 1024).toFixed(1);
const total = (s: Sample[]): { rss: number; pss: number } => s.reduce((a, x) => ({ rss: a.rss + x.rss, pss: a.pss + x.pss }), { rss: 0, pss: 0 });

export function flotillaProcs(stack: Stack): Proc[] {
  const procs: Proc[] = SERVICE_NAMES.map((s) => ({ name: s, pids: [stack.pidOf(s)].filter((p): p is number => !!p) }));
  const sup = supervisorPid(stack);
  procs.push({ name: "supervisor", pids: sup ? [sup] : [] }, { name: "nats-server", pids: [stack.pidOf("nats")].filter((p): p is number => !!p) });
  const warm = warmShimPids(stack, []);
  procs.push({ name: `warm shims (${warm.length}, idle)`, pids: warm });
  return procs;
}

/** Time until `ctr version` first answers on `socket` (polled back to back). */
async function firstVersion(socket: () => string | undefined, t0: bigint, timeoutMs = 60000): Promise<number> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    const s = socket();
    if (s && fs.existsSync(s) && (await runCtr(s, ["version"], { timeoutMs: 5000 })).code === 0) return Number(process.hrtime.bigint() - t0) / 1e6;
    await sleep(5);
  }
  throw new Error("the gateway never answered ctr version");
}

/** Start a stack (every process with a metrics address, as deployed) and time its start-up to a ready gateway. */
async function startTimedFlotilla(): Promise<{ target: Target & { stack: Stack }; startupMs: number }> {
  // startStack makes its directory under os.tmpdir(): point that at a fresh directory to find the socket early.
  const parent = fs.mkdtempSync(path.join(os.tmpdir(), "fp-"));
  const saved = process.env.TMPDIR;
  process.env.TMPDIR = parent;
  const sock = (): string | undefined => {
    const d = fs.readdirSync(parent).find((x) => x.startsWith("flt-"));
    return d ? path.join(parent, d, "flotilla.sock") : undefined;
  };
  const t0 = process.hrtime.bigint();
  const starting = startStack({ logLevel: "warn", metrics: true, extraToml: process.env.BENCH_FLOTILLA_TOML });
  if (saved === undefined) delete process.env.TMPDIR;
  else process.env.TMPDIR = saved;
  const [startupMs, stack] = await Promise.all([firstVersion(sock, t0), starting]);
  const target: Target & { stack: Stack } = {
    name: "flotilla",
    socket: stack.socket,
    stack,
    ctr: (a, o) => stack.ctr(a, o),
    pid: (s) => stack.pidOf((s ?? "gateway") as never),
    stop: async () => {
      await stack.stop();
      fs.rmSync(parent, { recursive: true, force: true });
    },
  };
  return { target, startupMs };
}

interface SideResult {
  startupMs: number;
  /** CPU time (ms) of every process of the side until its first answer. */
  startupCpuMs: number;
  idle: Sample[];
  /** Per repeat: wall time and CPU time of the long-lived processes (ms). */
  work: { ms: number; cpuMs: number }[];
  /** One sample set per repeat, after the workload and the idle wait. */
  repeats: Sample[][];
  shims: { rss: number; pss: number }[];
}

async function workload(t: Target, a: Args, refs: { big: string; many: string }, rep: number): Promise<void> {
  await must(t, ["images", "pull", "--plain-http", refs.big]);
  await must(t, ["images", "pull", "--plain-http", refs.many]);
  for (let i = 0; i < a.runs; i++) await must(t, ["run", "--rm", refs.big, `fp-${rep}-${i}`, "true"]);
  await must(t, ["images", "rm", "--sync", refs.big, refs.many]);
}

/** N detached containers; RSS/PSS of each one's shim; then every task killed and removed. */
async function shimsPerContainer(t: Target, a: Args, ref: string): Promise<{ rss: number; pss: number }[]> {
  await must(t, ["images", "pull", "--plain-http", ref]);
  const ids = Array.from({ length: a.shims }, (_, k) => `fp-d${k}`);
  try {
    for (const id of ids) await must(t, ["run", "-d", ref, id, "sleep", "100000"]);
    await sleep(a.idleMs);
    return shimPidsOf(t).map(memKiB);
  } finally {
    for (const id of ids) {
      await t.ctr(["task", "kill", "-s", "SIGKILL", id], { namespace: NS });
    }
    for (const id of ids) {
      for (let i = 0; i < 50 && (await t.ctr(["task", "delete", id], { namespace: NS })).code !== 0; i++) {
        if ((await t.ctr(["task", "ls", "-q"], { namespace: NS })).stdout.split("\n").includes(id)) await sleep(100);
        else break;
      }
      await t.ctr(["container", "rm", id], { namespace: NS });
    }
  }
}

function printTable(title: string, rows: Sample[]): void {
  console.error(title);
  for (const r of rows) console.error(`  ${r.name.padEnd(28)} RSS ${mib(r.rss).padStart(7)} MiB   PSS ${mib(r.pss).padStart(7)} MiB`);
  const tt = total(rows);
  console.error(`  ${"total".padEnd(28)} RSS ${mib(tt.rss).padStart(7)} MiB   PSS ${mib(tt.pss).padStart(7)} MiB`);
}

async function side(which: "flotilla" | "containerd", a: Args, refs: { big: string; many: string; small: string }): Promise<SideResult> {
  let t: Target;
  let startupMs: number;
  let procs: () => Proc[];
  if (which === "flotilla") {
    const f = await startTimedFlotilla();
    t = f.target;
    startupMs = f.startupMs;
    procs = () => flotillaProcs(f.target.stack);
  } else {
    const t0 = process.hrtime.bigint();
    t = await startContainerd();
    startupMs = Number(process.hrtime.bigint() - t0) / 1e6;
    procs = () => [{ name: "containerd", pids: [t.pid()!] }];
  }
  // Read once the side answers (Flotilla: once every service also answered its health check).
  const startupCpuMs = procs().flatMap((p) => p.pids).reduce((sum, p) => sum + cpuMs(p), 0);
  console.error(`${which}: start-up to first ctr version ${startupMs.toFixed(0)} ms, ${startupCpuMs.toFixed(0)} ms CPU`);
  try {
    await sleep(a.idleMs);
    const base = sample(procs());
    printTable(`${which}: idle after start-up`, base);
    const repeats: Sample[][] = [];
    const work: { ms: number; cpuMs: number }[] = [];
    const longLived = (): number[] => procs().filter((p) => !p.name.startsWith("warm shims")).flatMap((p) => p.pids);
    for (let r = 1; r <= a.repeats; r++) {
      const pids = longLived();
      const c0 = pids.reduce((sum, p) => sum + cpuMs(p), 0);
      const t0 = performance.now();
      await workload(t, a, refs, r);
      work.push({ ms: performance.now() - t0, cpuMs: pids.reduce((sum, p) => sum + cpuMs(p), 0) - c0 });
      console.error(`${which}: workload ${r}/${a.repeats} took ${work[r - 1]!.ms.toFixed(0)} ms, ${work[r - 1]!.cpuMs.toFixed(0)} ms CPU`);
      await sleep(a.idleMs);
      const s = sample(procs());
      repeats.push(s);
      printTable(`${which}: idle after workload ${r}/${a.repeats} (2 pulls, ${a.runs} ctr run --rm, 2 image removals)`, s);
    }
    const shims = await shimsPerContainer(t, a, refs.small);
    for (const s of shims) console.error(`${which}: shim of a running container RSS ${mib(s.rss)} MiB PSS ${mib(s.pss)} MiB`);
    return { startupMs, startupCpuMs, idle: base, work, repeats, shims };
  } finally {
    await t.stop();
  }
}

export async function run(argv: string[] = process.argv.slice(2)): Promise<Row[]> {
  const a = parseArgs(argv);
  const reg = await startRegistry();
  try {
    const per = Math.floor((a.bigMiB * 1024 * 1024) / 3);
    await reg.push("bench/big", "1", buildBusyboxImage({ tag: "big", extraLayers: [{ size: per, files: 4 }, { size: per, files: 4 }, { size: per, files: 4 }] }));
    await reg.push("bench/many", "1", buildBusyboxImage({ tag: "many", extraLayers: [{ size: a.files * 512, files: a.files }] }));
    await reg.push("bench/small", "1", buildBusyboxImage({ tag: "small" }));
    const refs = { big: `${reg.host}/bench/big:1`, many: `${reg.host}/bench/many:1`, small: `${reg.host}/bench/small:1` };
    // One after the other: memory does not depend on the machine's load the way times do.
    const f = await side("flotilla", a, refs);
    const c = await side("containerd", a, refs);
    const rows: Row[] = [];
    const mem = (benchmark: string, fk: number, ck: number): Row => ({ benchmark, unit: "MiB", flotilla: fk / 1024, containerd: ck / 1024, lowerIsBetter: true });
    const cd = (r: number): Sample => c.repeats[r]![0]!;
    for (const s of f.repeats[0]!) {
      rows.push(mem(`RSS after workload 1, ${s.name} vs containerd`, s.rss, cd(0).rss));
      rows.push(mem(`PSS after workload 1, ${s.name} vs containerd`, s.pss, cd(0).pss));
    }
    const it = total(f.idle);
    rows.push(mem("RSS total idle after start-up", it.rss, c.idle[0]!.rss));
    rows.push(mem("PSS total idle after start-up", it.pss, c.idle[0]!.pss));
    f.repeats.forEach((s, r) => {
      const tt = total(s);
      rows.push(mem(`RSS total after workload ${r + 1}/${a.repeats}`, tt.rss, cd(r).rss));
      rows.push(mem(`PSS total after workload ${r + 1}/${a.repeats}`, tt.pss, cd(r).pss));
    });
    const avg = (xs: { rss: number; pss: number }[], k: "rss" | "pss"): number => xs.reduce((s, x) => s + x[k], 0) / Math.max(1, xs.length);
    rows.push(mem(`RSS per container shim (mean of ${f.shims.length} / ${c.shims.length})`, avg(f.shims, "rss"), avg(c.shims, "rss")));
    rows.push(mem(`PSS per container shim (mean of ${f.shims.length} / ${c.shims.length})`, avg(f.shims, "pss"), avg(c.shims, "pss")));
    rows.push({ benchmark: "start-up to first ctr version (noisy: shared host)", unit: "ms", flotilla: f.startupMs, containerd: c.startupMs, lowerIsBetter: true });
    rows.push({ benchmark: "start-up CPU time, all processes", unit: "ms", flotilla: f.startupCpuMs, containerd: c.startupCpuMs, lowerIsBetter: true });
    f.work.forEach((w, r) => {
      rows.push({ benchmark: `workload ${r + 1}/${a.repeats} wall time`, unit: "ms", flotilla: w.ms, containerd: c.work[r]!.ms, lowerIsBetter: true });
      rows.push({ benchmark: `workload ${r + 1}/${a.repeats} CPU time (without shims and runc)`, unit: "ms", flotilla: w.cpuMs, containerd: c.work[r]!.cpuMs, lowerIsBetter: true });
    });
    return rows;
  } finally {
    await reg.stop();
  }
}

if (require.main === module) {
  run().then(report, (e) => {
    console.error(e);
    process.exit(1);
  });
}
