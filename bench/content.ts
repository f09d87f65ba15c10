/**
 * Content benchmark (issue 3): `ctr content ingest` and `ctr content get` of a 1 GiB blob, Flotilla
 * (through the gateway) side by side with a reference containerd, both running at once and measured in
 * interleaved rounds (so load from elsewhere on the machine hits both alike), reported as ratios; plus
 * the peak RSS of the content process (containerd: the whole daemon).
 *
 *   npm run bench content                       (1 GiB, 3 rounds; BENCH_CONTENT_MIB / _RUNS override)
 *   node dist/bench/content.js [--size-mib N] [--runs N] [--direct]
 *
 * --direct adds ctr against the content process's own socket (no gateway hop), to tell the content
 * process from the gateway. ctr's stdin is the blob file itself (seekable, as `< file` in a shell).
 */
import { spawn, spawnSync } from "node:child_process";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { peakRssMiB, report, startContainerd, startFlotilla, type Row } from "./lib";

/** ctr with stdin from a file and stdout to a file (or /dev/null); resolves with the wall time. */
function ctrTimed(socket: string, args: string[], stdinFile?: string, stdoutFile = "/dev/null"): Promise<{ code: number; seconds: number; stderr: string }> {
  return new Promise((resolve, reject) => {
    const inFd = fs.openSync(stdinFile ?? "/dev/null", "r");
    const outFd = fs.openSync(stdoutFile, "w");
    const t0 = process.hrtime.bigint();
    const child = spawn("ctr", ["-a", socket, "-n", "bench", ...args], { stdio: [inFd, outFd, "pipe"] });
    fs.closeSync(inFd);
    fs.closeSync(outFd);
    let stderr = "";
    child.stderr!.on("data", (b: Buffer) => (stderr += b.toString()));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code: code ?? 1, seconds: Number(process.hrtime.bigint() - t0) / 1e9, stderr }));
  });
}

async function sha256File(p: string): Promise<string> {
  const h = crypto.createHash("sha256");
  for await (const c of fs.createReadStream(p, { highWaterMark: 1 << 20 })) h.update(c as Buffer);
  return "sha256:" + h.digest("hex");
}

async function makeBlob(p: string, mib: number): Promise<string> {
  const fd = fs.openSync(p, "w");
  const chunk = Buffer.allocUnsafe(1 << 20);
  const h = crypto.createHash("sha256");
  for (let i = 0; i < mib; i++) {
    crypto.randomFillSync(chunk);
    h.update(chunk);
    fs.writeSync(fd, chunk);
  }
  fs.closeSync(fd);
  return "sha256:" + h.digest("hex");
}

interface Side {
  name: string;
  socket: string;
  /** PID whose peak RSS is reported. */
  pid(): number | undefined;
  ingest: number[];
  get: number[];
  /** Peak RSS (VmHWM) in MiB, sampled while the benchmark runs. */
  peakMiB: number;
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;

let gcN = 0;

/** Remove the blob and let the garbage collection this schedules finish (`leases rm --sync`). */
async function clear(t: Side, digest: string): Promise<void> {
  await ctrTimed(t.socket, ["content", "rm", digest]);
  const id = `bench-gc-${++gcN}`;
  await ctrTimed(t.socket, ["leases", "create", "--id", id]);
  await ctrTimed(t.socket, ["leases", "rm", "--sync", id]);
  spawnSync("sync");
}

async function ingest(t: Side, blob: string, digest: string, sizeMiB: number): Promise<void> {
  await clear(t, digest);
  const r = await ctrTimed(t.socket, ["content", "ingest", "--expected-digest", digest, `bench-${gcN}`], blob);
  if (r.code !== 0) throw new Error(`${t.name}: ingest failed: ${r.stderr}`);
  t.ingest.push(r.seconds);
  console.error(`  ${t.name} ingest: ${r.seconds.toFixed(2)} s (${(sizeMiB / r.seconds).toFixed(0)} MiB/s)`);
}

async function get(t: Side, digest: string, sizeMiB: number, verifyTo?: string): Promise<void> {
  const r = await ctrTimed(t.socket, ["content", "get", digest], undefined, verifyTo ?? "/dev/null");
  if (r.code !== 0) throw new Error(`${t.name}: get failed: ${r.stderr}`);
  t.get.push(r.seconds);
  console.error(`  ${t.name} get: ${r.seconds.toFixed(2)} s (${(sizeMiB / r.seconds).toFixed(0)} MiB/s)`);
  if (verifyTo) {
    const got = await sha256File(verifyTo);
    fs.rmSync(verifyTo);
    if (got !== digest) throw new Error(`${t.name}: get returned ${got}, want ${digest}`);
  }
}

export interface ContentBenchResult {
  sizeMiB: number;
  runs: number;
  sides: Side[];
}

export async function measureAll(sizeMiB: number, runs: number, direct: boolean): Promise<ContentBenchResult> {
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), "flt-bench-"));
  const f = await startFlotilla();
  const c = await startContainerd().catch(async (e: unknown) => {
    await f.stop();
    throw e;
  });
  const side = (name: string, socket: string, pid: () => number | undefined): Side => ({ name, socket, pid, ingest: [], get: [], peakMiB: 0 });
  const sides: Side[] = [side("flotilla", f.socket, () => f.stack.pidOf("content"))];
  if (direct) sides.push(side("flotilla-direct", f.stack.address("content").replace(/^unix:\/\//, ""), () => f.stack.pidOf("content")));
  sides.push(side("containerd", c.socket, () => c.pid()));
  const sampler = setInterval(() => {
    for (const s of sides) {
      const pid = s.pid();
      try {
        if (pid) s.peakMiB = Math.max(s.peakMiB, peakRssMiB(pid));
      } catch {
        /* restarting */
      }
    }
  }, 200);
  try {
    const blob = path.join(scratch, "blob.bin");
    const digest = await makeBlob(blob, sizeMiB);
    for (let i = 0; i < runs; i++) for (const t of sides) await ingest(t, blob, digest, sizeMiB);
    // Keep the blob from garbage collection while it is read.
    await ctrTimed(f.socket, ["content", "label", digest, "containerd.io/gc.root=bench"]);
    await ctrTimed(c.socket, ["content", "label", digest, "containerd.io/gc.root=bench"]);
    for (let i = 0; i < runs; i++) for (const t of sides) await get(t, digest, sizeMiB, i === 0 ? path.join(scratch, "get.out") : undefined);
    return { sizeMiB, runs, sides };
  } finally {
    clearInterval(sampler);
    await c.stop();
    await f.stop();
    fs.rmSync(scratch, { recursive: true, force: true });
  }
}

const ENV_SIZE = Number(process.env.BENCH_CONTENT_MIB ?? 1024);
const ENV_RUNS = Number(process.env.BENCH_CONTENT_RUNS ?? 3);

/** For `npm run bench`: throughput (MiB/s, higher is better) and peak RSS rows. */
export async function run(sizeMiB = ENV_SIZE, runs = ENV_RUNS): Promise<Row[]> {
  const res = await measureAll(sizeMiB, runs, false);
  const f = res.sides.find((s) => s.name === "flotilla")!;
  const c = res.sides.find((s) => s.name === "containerd")!;
  const mibs = (xs: number[]): number => sizeMiB / median(xs);
  return [
    { benchmark: `ctr content ingest ${sizeMiB} MiB (median of ${runs})`, unit: "MiB/s", flotilla: mibs(f.ingest), containerd: mibs(c.ingest), lowerIsBetter: false },
    { benchmark: `ctr content get ${sizeMiB} MiB (median of ${runs})`, unit: "MiB/s", flotilla: mibs(f.get), containerd: mibs(c.get), lowerIsBetter: false },
    { benchmark: "peak RSS: content process vs containerd daemon", unit: "MiB", flotilla: f.peakMiB, containerd: c.peakMiB, lowerIsBetter: true },
  ];
}

function row(cells: string[]): string {
  return cells.map((c, i) => (i === 0 ? c.padEnd(28) : c.padStart(14))).join("");
}

async function main(): Promise<void> {
  const args = { sizeMiB: ENV_SIZE, runs: ENV_RUNS, direct: false };
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--size-mib") args.sizeMiB = Number(argv[++i]);
    else if (argv[i] === "--runs") args.runs = Number(argv[++i]);
    else if (argv[i] === "--direct") args.direct = true;
  }
  if (!args.direct) {
    report(await run(args.sizeMiB, args.runs));
    return;
  }
  const res = await measureAll(args.sizeMiB, args.runs, true);
  const ref = res.sides.find((s) => s.name === "containerd")!;
  const mibs = (xs: number[]): string => `${(args.sizeMiB / median(xs)).toFixed(0)} MiB/s`;
  console.log(`ctr content ingest/get of ${args.sizeMiB} MiB, median of ${args.runs} interleaved rounds`);
  console.log(row(["", "ingest", "get"]));
  for (const s of res.sides) console.log(row([s.name, mibs(s.ingest), mibs(s.get)]));
  for (const s of res.sides.filter((x) => x !== ref)) {
    console.log(row([`${s.name} / containerd`, `${(median(ref.ingest) / median(s.ingest)).toFixed(2)}x`, `${(median(ref.get) / median(s.get)).toFixed(2)}x`]));
  }
  console.log(`peak RSS: content process ${res.sides[0]!.peakMiB.toFixed(0)} MiB, containerd ${ref.peakMiB.toFixed(0)} MiB`);
}

if (require.main === module) {
  main().then(() => process.exit(0), (e: unknown) => {
    console.error(e);
    process.exit(1);
  });
}
