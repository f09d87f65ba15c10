/**
 * Transfer pull benchmark: Flotilla's Transfer pull (through the gateway, with unpack) versus
 * `ctr images pull --plain-http` on a reference containerd (Debian's 1.6 on temporary roots), from
 * the same docker-registry on loopback, the same images:
 *   - ~100 MB in 5 layers of partly compressible data (gzip);
 *   - 6,000 small files in 3 layers.
 * Each timed pull starts from nothing (`ctr images rm --sync` collects content and snapshots between
 * runs). Ratios are Flotilla/containerd (goal: at most 0.6). Not part of CI.
 * Run: npm run build && node dist/bench/transfer.js [--runs N]
 */
import { randomBytes } from "node:crypto";
import { background } from "../libs/context";
import { TransferClient } from "../libs/clients/transfer";
import { closeChannels } from "../libs/grpc/client";
import { hostPlatform } from "../libs/oci";
import { buildImage, pushImage } from "../test/transfer/images";
import { startRegistry } from "../test/transfer/registry";
import { TAR_END, tarFile, tarHeader } from "../services/transfer/src/local/tar";
import { report, startContainerd, startFlotilla, type Row, type Target } from "./lib";

/** `size` bytes that gzip to about half: random halves interleaved with zeros. */
function halfCompressible(size: number): Buffer {
  const b = Buffer.alloc(size);
  for (let off = 0; off < size; off += 8192) randomBytes(4096).copy(b, off);
  return b;
}

function bigLayer(i: number, mb: number): Buffer {
  const parts = [tarHeader({ name: `l${i}/`, size: 0, type: "directory", mode: 0o755 })];
  for (let f = 0; f < mb / 4; f++) parts.push(tarFile(`l${i}/blob${f}`, halfCompressible(4 << 20)));
  parts.push(TAR_END);
  return Buffer.concat(parts);
}

function manyFilesLayer(i: number, files: number): Buffer {
  const parts = [tarHeader({ name: `m${i}/`, size: 0, type: "directory", mode: 0o755 })];
  for (let d = 0; d < files / 100; d++) {
    parts.push(tarHeader({ name: `m${i}/d${d}/`, size: 0, type: "directory", mode: 0o755 }));
    for (let f = 0; f < 100; f++) parts.push(tarFile(`m${i}/d${d}/f${f}.txt`, randomBytes(200 + ((d * 100 + f) % 1800))));
  }
  parts.push(TAR_END);
  return Buffer.concat(parts);
}

/** One timed pull from nothing (the image is removed and collected afterwards). */
function puller(t: Target, ref: string): () => Promise<number> {
  const client = new TransferClient(t.socket);
  return async (): Promise<number> => {
    const start = process.hrtime.bigint();
    if (t.name === "flotilla") {
      await client.pull(background("default"), ref, { platforms: [hostPlatform()], unpacks: [{ platform: hostPlatform(), snapshotter: "overlayfs" }] });
    } else {
      const r = await t.ctr(["images", "pull", "--plain-http", ref], { timeoutMs: 300000 });
      if (r.code !== 0) throw new Error(`ctr pull: ${r.stderr}`);
    }
    const ms = Number(process.hrtime.bigint() - start) / 1e6;
    const rm = await t.ctr(["images", "rm", "--sync", ref]);
    if (rm.code !== 0) throw new Error(`images rm: ${rm.stderr}`);
    return ms;
  };
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** Alternate Flotilla and containerd pulls (after one warm-up each), so load drift hits both alike. */
async function alternate(f: Target, c: Target, ref: string, runs: number): Promise<{ flotilla: number; containerd: number }> {
  const pf = puller(f, ref);
  const pc = puller(c, ref);
  await pf();
  await pc();
  const tf: number[] = [];
  const tc: number[] = [];
  for (let i = 0; i < runs; i++) {
    tf.push(await pf());
    tc.push(await pc());
  }
  return { flotilla: median(tf), containerd: median(tc) };
}

export async function run(runs = 5): Promise<Row[]> {
  const reg = await startRegistry();
  try {
    const big = buildImage([0, 1, 2, 3, 4].map((i) => bigLayer(i, 20)));
    const many = buildImage([0, 1, 2].map((i) => manyFilesLayer(i, 2000)));
    const bigRef = await pushImage(reg.host, "bench/big", "1", big);
    const manyRef = await pushImage(reg.host, "bench/many", "1", many);
    const sizeMb = big.layers.reduce((n, l) => n + l.desc.size, 0) / (1 << 20);
    const f = await startFlotilla();
    let c: Target | undefined;
    try {
      c = await startContainerd();
      const bigT = await alternate(f, c, bigRef, runs);
      const manyT = await alternate(f, c, manyRef, runs);
      return [
        { benchmark: `pull+unpack 5 layers, ${sizeMb.toFixed(0)} MB gzip (median of ${runs})`, unit: "ms", flotilla: bigT.flotilla, containerd: bigT.containerd, lowerIsBetter: true },
        { benchmark: `pull+unpack 6,000 files in 3 layers (median of ${runs})`, unit: "ms", flotilla: manyT.flotilla, containerd: manyT.containerd, lowerIsBetter: true },
      ];
    } finally {
      await f.stop();
      await c?.stop();
    }
  } finally {
    closeChannels();
    await reg.stop();
  }
}

if (require.main === module) {
  const i = process.argv.indexOf("--runs");
  run(i > 0 ? Number(process.argv[i + 1]) : 5).then((rows) => {
    report(rows);
    process.exit(0);
  }, (e) => {
    console.error(e);
    process.exit(1);
  });
}
