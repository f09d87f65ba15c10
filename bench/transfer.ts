/**
 * Transfer pull benchmark: Flotilla's Transfer pull (through the gateway, with unpack) versus
 * `ctr images pull --plain-http` on a reference containerd (Debian's 1.6 on temporary roots), from
 * the same docker-registry on loopback, the same images:
 *   - ~100 MB in 5 layers of partly compressible data (gzip);
 *   - 6,000 small files in 3 layers.
 * Each timed pull starts from nothing (`ctr images rm --sync` collects content and snapshots between
 * runs). Wall time and CPU seconds (client + server processes; on a shared machine CPU is the steadier
 * figure). Ratios are Flotilla/containerd (goal: at most 0.6). Not part of CI.
 * Run: npm run build && node dist/bench/transfer.js [--runs N] [--downloads N (Flotilla's max_concurrent_downloads)]
 */
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import { background } from "../libs/context";
import { TransferClient } from "../libs/clients/transfer";
import { hostPlatform } from "../libs/oci";
import { buildImage, pushImage } from "../test/transfer/images";
import { startRegistry } from "../test/transfer/registry";
import { TAR_END, tarFile, tarHeader } from "../services/transfer/src/local/tar";
import { report, startContainerd, startFlotilla, type Row, type Target } from "./lib";
import { startStack, testChannels } from "../test/harness";

/** `size` bytes that gzip to about half: random halves interleaved with zeros. */
function halfCompressible(size: number): Buffer {
  const b = Buffer.alloc(size);
  for (let off = 0; off < size; off += 8192) randomBytes(4096).copy(b, off);
  return b;
}

export function bigLayer(i: number, mb: number): Buffer {
  const parts = [tarHeader({ name: `l${i}/`, size: 0, type: "directory", mode: 0o755 })];
  for (let f = 0; f < mb / 4; f++) parts.push(tarFile(`l${i}/blob${f}`, halfCompressible(4 << 20)));
  parts.push(TAR_END);
  return Buffer.concat(parts);
}

export function manyFilesLayer(i: number, files: number): Buffer {
  const parts = [tarHeader({ name: `m${i}/`, size: 0, type: "directory", mode: 0o755 })];
  for (let d = 0; d < files / 100; d++) {
    parts.push(tarHeader({ name: `m${i}/d${d}/`, size: 0, type: "directory", mode: 0o755 }));
    for (let f = 0; f < 100; f++) parts.push(tarFile(`m${i}/d${d}/f${f}.txt`, randomBytes(200 + ((d * 100 + f) % 1800))));
  }
  parts.push(TAR_END);
  return Buffer.concat(parts);
}

const SERVICES = ["content", "snapshots", "images", "tasks", "transfer", "sandbox", "gateway"];

/** CPU seconds (user + system) a process has used so far. */
function cpuOf(pid: number | undefined): number {
  if (!pid) return 0;
  try {
    const f = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    const rest = f.slice(f.lastIndexOf(")") + 2).split(" ");
    return (Number(rest[11]) + Number(rest[12])) / 100;
  } catch {
    return 0;
  }
}

/** CPU seconds of the server side: every Flotilla process, or the containerd daemon. */
function serverCpu(t: Target): number {
  return t.name === "flotilla" ? SERVICES.reduce((n, s) => n + cpuOf(t.pid(s)), 0) : cpuOf(t.pid());
}

/** `ctr images pull` under /usr/bin/time; resolves with ctr's own CPU seconds. */
function ctrPull(socket: string, ref: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const c = spawn("/usr/bin/time", ["-f", "CPU %U %S", "ctr", "-a", socket, "-n", "default", "images", "pull", "--plain-http", ref], { stdio: ["ignore", "ignore", "pipe"] });
    let err = "";
    c.stderr.on("data", (b: Buffer) => (err += b));
    c.on("close", (code) => {
      const m = /CPU ([\d.]+) ([\d.]+)/.exec(err);
      if (code !== 0 || !m) return reject(new Error(`ctr pull failed: ${err}`));
      resolve(Number(m[1]) + Number(m[2]));
    });
  });
}

interface Sample {
  ms: number;
  /** CPU seconds, client and server together. */
  cpu: number;
}

/** One timed pull from nothing (the image is removed and collected afterwards). */
function puller(t: Target, ref: string): () => Promise<Sample> {
  const client = new TransferClient(testChannels.get(t.socket));
  return async (): Promise<Sample> => {
    const cpu0 = serverCpu(t);
    const self0 = process.cpuUsage();
    const start = process.hrtime.bigint();
    let clientCpu = 0;
    if (t.name === "flotilla") {
      await client.pull(background("default"), ref, { platforms: [hostPlatform()], unpacks: [{ platform: hostPlatform(), snapshotter: "overlayfs" }] });
      const d = process.cpuUsage(self0);
      clientCpu = (d.user + d.system) / 1e6;
    } else {
      clientCpu = await ctrPull(t.socket, ref);
    }
    const ms = Number(process.hrtime.bigint() - start) / 1e6;
    const cpu = serverCpu(t) - cpu0 + clientCpu;
    const rm = await t.ctr(["images", "rm", "--sync", ref]);
    if (rm.code !== 0) throw new Error(`images rm: ${rm.stderr}`);
    return { ms, cpu };
  };
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** Alternate Flotilla and containerd pulls (after one warm-up each), so load drift hits both alike. */
async function alternate(f: Target, c: Target, ref: string, runs: number): Promise<{ flotilla: Sample; containerd: Sample }> {
  const pf = puller(f, ref);
  const pc = puller(c, ref);
  await pf();
  await pc();
  const tf: Sample[] = [];
  const tc: Sample[] = [];
  for (let i = 0; i < runs; i++) {
    tf.push(await pf());
    tc.push(await pc());
  }
  const med = (xs: Sample[]): Sample => ({ ms: median(xs.map((x) => x.ms)), cpu: median(xs.map((x) => x.cpu)) });
  return { flotilla: med(tf), containerd: med(tc) };
}

/** Flotilla with `max_concurrent_downloads` set (default: the service's default). */
async function flotilla(downloads?: number): Promise<Target> {
  if (!downloads) return startFlotilla();
  const stack = await startStack({ logLevel: "warn", extraToml: `[plugins."io.containerd.transfer.v1.local"]\nmax_concurrent_downloads = ${downloads}` });
  return { name: "flotilla", socket: stack.socket, ctr: (a, o) => stack.ctr(a, o), pid: (s) => stack.pidOf((s ?? "gateway") as never), stop: () => stack.stop() };
}

export async function run(runs = 5, downloads?: number): Promise<Row[]> {
  const reg = await startRegistry();
  try {
    const big = buildImage([0, 1, 2, 3, 4].map((i) => bigLayer(i, 20)));
    const many = buildImage([0, 1, 2].map((i) => manyFilesLayer(i, 2000)));
    const bigRef = await pushImage(reg.host, "bench/big", "1", big);
    const manyRef = await pushImage(reg.host, "bench/many", "1", many);
    const sizeMb = big.layers.reduce((n, l) => n + l.desc.size, 0) / (1 << 20);
    const f = await flotilla(downloads);
    let c: Target | undefined;
    try {
      c = await startContainerd();
      const bigT = await alternate(f, c, bigRef, runs);
      const manyT = await alternate(f, c, manyRef, runs);
      const big = `pull+unpack 5 layers, ${sizeMb.toFixed(0)} MB gzip (median of ${runs})`;
      const many = `pull+unpack 6,000 files in 3 layers (median of ${runs})`;
      return [
        { benchmark: big, unit: "ms", flotilla: bigT.flotilla.ms, containerd: bigT.containerd.ms, lowerIsBetter: true },
        { benchmark: many, unit: "ms", flotilla: manyT.flotilla.ms, containerd: manyT.containerd.ms, lowerIsBetter: true },
        { benchmark: big.replace("pull+unpack", "CPU of pull+unpack"), unit: "cpu s", flotilla: bigT.flotilla.cpu, containerd: bigT.containerd.cpu, lowerIsBetter: true },
        { benchmark: many.replace("pull+unpack", "CPU of pull+unpack"), unit: "cpu s", flotilla: manyT.flotilla.cpu, containerd: manyT.containerd.cpu, lowerIsBetter: true },
      ];
    } finally {
      await f.stop();
      await c?.stop();
    }
  } finally {
    testChannels.close();
    await reg.stop();
  }
}

if (require.main === module) {
  const arg = (k: string): number | undefined => {
    const i = process.argv.indexOf(k);
    return i > 0 ? Number(process.argv[i + 1]) : undefined;
  };
  run(arg("--runs") ?? 5, arg("--downloads")).then((rows) => {
    report(rows);
    process.exit(0);
  }, (e) => {
    console.error(e);
    process.exit(1);
  });
}
