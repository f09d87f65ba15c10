/**
 * Content benchmark (issue 3): `ctr content ingest` and `ctr content get` of a 1 GiB blob, Flotilla
 * (through the gateway) side by side with a reference containerd in the same run, as ratios; plus the
 * peak RSS of the content process (containerd: the whole daemon).
 *
 *   npm run bench content                       (1 GiB, 3 runs each)
 *   node dist/bench/content.js [--size-mib N] [--runs N] [--direct]
 *
 * --direct also measures ctr against the content process's own socket (no gateway hop), to separate
 * the content process from the gateway. ctr's stdin is the blob file itself (seekable, as `< file`).
 */
import { spawn, spawnSync } from "node:child_process";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { peakRssMiB, report, sideBySide, startContainerd, startFlotilla, type Row } from "./lib";

interface Args {
  sizeMiB: number;
  runs: number;
  direct: boolean;
}

function parseArgs(argv: string[]): Args {
  const a: Args = { sizeMiB: 1024, runs: 3, direct: false };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--size-mib") a.sizeMiB = Number(argv[++i]);
    else if (argv[i] === "--runs") a.runs = Number(argv[++i]);
    else if (argv[i] === "--direct") a.direct = true;
  }
  return a;
}

/** Run ctr with stdin from a file (seekable, as `< file` in a shell) and stdout to a file or /dev/null. */
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

interface Target {
  name: string;
  socket: string;
  /** PID whose peak RSS is reported. */
  pid(): number | undefined;
}

interface Result {
  ingest: number[];
  get: number[];
  rssMiB?: number;
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;

async function measure(t: Target, blob: string, digest: string, runs: number, sizeMiB: number, scratch: string): Promise<Result> {
  const r: Result = { ingest: [], get: [] };
  for (let i = 0; i < runs; i++) {
    await ctrTimed(t.socket, ["content", "rm", digest]);
    spawnSync("sync");
    const ing = await ctrTimed(t.socket, ["content", "ingest", "--expected-digest", digest, `bench-${i}`], blob);
    if (ing.code !== 0) throw new Error(`${t.name}: ingest failed: ${ing.stderr}`);
    r.ingest.push(ing.seconds);
    console.log(`  ${t.name} ingest #${i + 1}: ${ing.seconds.toFixed(2)} s (${(sizeMiB / ing.seconds).toFixed(0)} MiB/s)`);
  }
  const out = path.join(scratch, "get.out");
  for (let i = 0; i < runs; i++) {
    const g = await ctrTimed(t.socket, ["content", "get", digest], undefined, i === 0 ? out : "/dev/null");
    if (g.code !== 0) throw new Error(`${t.name}: get failed: ${g.stderr}`);
    r.get.push(g.seconds);
    console.log(`  ${t.name} get #${i + 1}: ${g.seconds.toFixed(2)} s (${(sizeMiB / g.seconds).toFixed(0)} MiB/s)`);
    if (i === 0) {
      const got = await sha256File(out);
      fs.rmSync(out);
      if (got !== digest) throw new Error(`${t.name}: get returned ${got}, want ${digest}`);
    }
  }
  const pid = t.pid();
  r.rssMiB = pid ? peakRssMiB(pid) : undefined;
  await ctrTimed(t.socket, ["content", "rm", digest]);
  return r;
}

function row(cells: string[]): string {
  return cells.map((c, i) => (i === 0 ? c.padEnd(26) : c.padStart(14))).join("");
}

const ENV_SIZE = Number(process.env.BENCH_CONTENT_MIB ?? 1024);
const ENV_RUNS = Number(process.env.BENCH_CONTENT_RUNS ?? 3);

/** For `npm run bench`: rows of throughput (MiB/s, higher is better) and peak RSS. */
export async function run(sizeMiB = ENV_SIZE, runs = ENV_RUNS): Promise<Row[]> {
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), "flt-bench-"));
  try {
    const blob = path.join(scratch, "blob.bin");
    const digest = await makeBlob(blob, sizeMiB);
    const res = await sideBySide((t) =>
      measure({ name: t.name, socket: t.socket, pid: () => t.pid(t.name === "flotilla" ? "content" : undefined) }, blob, digest, runs, sizeMiB, scratch));
    const mibs = (r: Result, k: "ingest" | "get"): number => sizeMiB / median(r[k]);
    return [
      { benchmark: `ctr content ingest ${sizeMiB} MiB (median of ${runs})`, unit: "MiB/s", flotilla: mibs(res.flotilla, "ingest"), containerd: mibs(res.containerd, "ingest"), lowerIsBetter: false },
      { benchmark: `ctr content get ${sizeMiB} MiB (median of ${runs})`, unit: "MiB/s", flotilla: mibs(res.flotilla, "get"), containerd: mibs(res.containerd, "get"), lowerIsBetter: false },
      { benchmark: "peak RSS: content process / containerd", unit: "MiB", flotilla: res.flotilla.rssMiB ?? NaN, containerd: res.containerd.rssMiB ?? NaN, lowerIsBetter: true },
    ];
  } finally {
    fs.rmSync(scratch, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  if (!args.direct) {
    report(await run(args.sizeMiB, args.runs));
    return;
  }
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), "flt-bench-"));
  const f = await startFlotilla();
  try {
    const blob = path.join(scratch, "blob.bin");
    const digest = await makeBlob(blob, args.sizeMiB);
    const direct = await measure({ name: "flotilla-direct", socket: f.stack.address("content").replace(/^unix:\/\//, ""), pid: () => f.stack.pidOf("content") }, blob, digest, args.runs, args.sizeMiB, scratch);
    const gw = await measure({ name: "flotilla", socket: f.socket, pid: () => f.stack.pidOf("content") }, blob, digest, args.runs, args.sizeMiB, scratch);
    await f.stop();
    const c = await startContainerd();
    let ref: Result;
    try {
      ref = await measure({ name: "containerd", socket: c.socket, pid: () => c.pid() }, blob, digest, args.runs, args.sizeMiB, scratch);
    } finally {
      await c.stop();
    }
    const mibs = (sec: number): string => `${(args.sizeMiB / sec).toFixed(0)} MiB/s`;
    console.log(row(["", "ingest", "get", "peak RSS"]));
    for (const [n, r] of [["flotilla (gateway)", gw], ["flotilla (direct)", direct], ["containerd", ref]] as const) {
      console.log(row([n, mibs(median(r.ingest)), mibs(median(r.get)), r.rssMiB ? `${r.rssMiB.toFixed(0)} MiB` : "-"]));
    }
    for (const [n, r] of [["gateway / containerd", gw], ["direct / containerd", direct]] as const) {
      console.log(row([n, `${(median(ref.ingest) / median(r.ingest)).toFixed(2)}x`, `${(median(ref.get) / median(r.get)).toFixed(2)}x`, ""]));
    }
  } finally {
    await f.stop().catch(() => undefined);
    fs.rmSync(scratch, { recursive: true, force: true });
  }
}

if (require.main === module) {
  main().then(() => process.exit(0), (e: unknown) => {
    console.error(e);
    process.exit(1);
  });
}
