/**
 * Snapshots and diff benchmark, Flotilla side by side with a reference containerd (the Debian
 * `containerd` binary on temporary directories), both driven through their containerd gRPC sockets
 * by the same client code:
 *
 *   - Prepare+Commit pairs per second building a 100-deep chain (overlayfs and native);
 *   - Diff.Apply (prepare + apply + commit per layer) of a 5-layer ~100 MB image of incompressible
 *     data, and of a 3-layer image of 6,000 small files (tar+gzip), on overlayfs.
 *
 * Ratios are containerd time / Flotilla time (above 1 = Flotilla faster). Not part of CI.
 * Run: npm run build && node dist/bench/snapshots.js [--rounds N]
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { background, type CallContext } from "../libs/context";
import { RpcClient } from "../libs/grpc/client";
import { DiffProxy } from "../libs/clients/diff";
import { SnapshotterProxy } from "../libs/clients/snapshots";
import { LayerMediaTypes, type Descriptor } from "../libs/core/diff";
import { RemoteContent } from "../services/snapshots/src/local/diff/content";
import { startStack, waitFor, testChannels } from "../test/harness";
import { file, gzip, sha256, tarOf, type E } from "../test/snapshots/layers";

interface Target {
  name: string;
  socket: string;
  ctx: CallContext;
  stop(): Promise<void>;
}

const rounds = Number(process.argv[process.argv.indexOf("--rounds") + 1] || 3) || 3;

async function startContainerd(): Promise<Target> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ctrd-bench-"));
  const socket = path.join(dir, "containerd.sock");
  const cfg = path.join(dir, "config.toml");
  fs.writeFileSync(cfg, [
    "version = 2",
    `root = ${JSON.stringify(path.join(dir, "root"))}`,
    `state = ${JSON.stringify(path.join(dir, "state"))}`,
    'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
    "[grpc]",
    `address = ${JSON.stringify(socket)}`,
    "[ttrpc]",
    `address = ${JSON.stringify(socket + ".ttrpc")}`,
    '[plugins."io.containerd.internal.v1.opt"]',
    `path = ${JSON.stringify(path.join(dir, "opt"))}`,
  ].join("\n") + "\n");
  const log = fs.openSync(path.join(dir, "containerd.log"), "a");
  const child: ChildProcess = spawn("containerd", ["--config", cfg], { stdio: ["ignore", log, log] });
  fs.closeSync(log);
  await waitFor("containerd socket", () => (fs.existsSync(socket) ? true : undefined), 20000);
  const ctx = background("bench");
  const leases = new RpcClient(testChannels.get(socket), "containerd.services.leases.v1.Leases");
  await waitFor("containerd ready", async () => ((await leases.unary(ctx, "Create", { id: `bench-${Date.now()}`, labels: {} })).lease ? true : undefined), 20000);
  const lease = await benchLease(socket);
  return {
    name: "containerd",
    socket,
    ctx: { ...ctx, lease },
    stop: async () => {
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once("exit", r));
        child.kill("SIGTERM");
        await Promise.race([exited, new Promise((r) => setTimeout(r, 10000))]);
        if (child.exitCode === null) child.kill("SIGKILL");
      }
      const mounts = fs.readFileSync("/proc/self/mountinfo", "utf8").split("\n").map((l) => l.split(" ")[4] ?? "").filter((m) => m.startsWith(dir));
      for (const m of mounts.sort((a, b) => b.length - a.length)) spawnSync("umount", ["-l", m]);
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Everything the benchmark creates lives under one lease, so neither side's garbage collector takes it. */
async function benchLease(socket: string): Promise<string> {
  const leases = new RpcClient(testChannels.get(socket), "containerd.services.leases.v1.Leases");
  const id = `bench-lease-${Date.now()}`;
  await leases.unary(background("bench"), "Create", { id, labels: {} });
  return id;
}

async function startFlotilla(): Promise<Target> {
  const stack = await startStack({ logLevel: "warn" });
  for (const s of ["snapshots", "content", "images", "gateway"] as const) await stack.waitHealthy(s);
  const lease = await benchLease(stack.socket);
  return { name: "flotilla", socket: stack.socket, ctx: background("bench", { lease }), stop: () => stack.stop() };
}

async function chainOps(t: Target, snapshotter: string, tag: string): Promise<number> {
  const sn = SnapshotterProxy.connect(testChannels.get(t.socket), snapshotter);
  let parent = "";
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < 100; i++) {
    await sn.prepare(t.ctx, `${tag}-${i}-w`, parent);
    await sn.commit(t.ctx, `${tag}-${i}`, `${tag}-${i}-w`);
    parent = `${tag}-${i}`;
  }
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  for (let i = 99; i >= 0; i--) await sn.remove(t.ctx, `${tag}-${i}`);
  return 100 / secs;
}

async function upload(t: Target, blobs: Buffer[]): Promise<Descriptor[]> {
  const content = new RemoteContent(testChannels.get(t.socket));
  const out: Descriptor[] = [];
  for (const [i, b] of blobs.entries()) {
    const w = await content.writer(t.ctx, `bench-${Date.now()}-${i}`);
    await w.write(b);
    const digest = sha256(b);
    await w.commit(b.length, digest, {});
    out.push({ mediaType: LayerMediaTypes.OciTarGzip, digest, size: b.length });
  }
  return out;
}

async function unpack(t: Target, layers: Descriptor[], tag: string): Promise<number> {
  const sn = SnapshotterProxy.connect(testChannels.get(t.socket), "overlayfs");
  const diff = new DiffProxy(testChannels.get(t.socket));
  let parent = "";
  const t0 = process.hrtime.bigint();
  for (const [i, d] of layers.entries()) {
    const m = await sn.prepare(t.ctx, `${tag}-extract-${i}`, parent);
    await diff.apply(t.ctx, d, m);
    await sn.commit(t.ctx, `${tag}-${i}`, `${tag}-extract-${i}`);
    parent = `${tag}-${i}`;
  }
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  for (let i = layers.length - 1; i >= 0; i--) await sn.remove(t.ctx, `${tag}-${i}`);
  return secs;
}

function bigLayers(): Buffer[] {
  const out: Buffer[] = [];
  for (let l = 0; l < 5; l++) {
    const entries: E[] = [];
    for (let f = 0; f < 4; f++) entries.push(file(`layer${l}/blob${f}`, randomBytes(5 * 1024 * 1024)));
    out.push(gzip(tarOf(entries)));
  }
  return out;
}

function smallFileLayers(): Buffer[] {
  const out: Buffer[] = [];
  for (let l = 0; l < 3; l++) {
    const entries: E[] = [];
    for (let f = 0; f < 2000; f++) entries.push(file(`l${l}/d${f % 50}/f${f}.txt`, `layer ${l} file ${f} `.repeat(20), { mode: 0o644 }));
    out.push(gzip(tarOf(entries)));
  }
  return out;
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function main(): Promise<void> {
  const big = bigLayers();
  const small = smallFileLayers();
  console.log(`layers: 5 x ${(big[0]!.length / 1e6).toFixed(1)} MB (random), 3 x ${(small[0]!.length / 1e3).toFixed(0)} kB (2000 small files each); ${rounds} rounds, median; load average ${os.loadavg().map((x) => x.toFixed(1)).join(" ")}`);
  const targets = [await startContainerd(), await startFlotilla()];
  const samples: Record<string, Record<string, number[]>> = { containerd: {}, flotilla: {} };
  const add = (t: Target, k: string, v: number): void => void (samples[t.name]![k] ??= []).push(v);
  try {
    const uploaded = new Map<string, { big: Descriptor[]; small: Descriptor[] }>();
    for (const t of targets) uploaded.set(t.name, { big: await upload(t, big), small: await upload(t, small) });
    // Rounds alternate between the two so that a busy machine hurts both alike.
    for (let i = 0; i < rounds; i++) {
      for (const t of targets) {
        const tagged = (e: unknown): never => {
          throw new Error(`${t.name} round ${i}: ${(e as Error).message}`);
        };
        for (const sn of ["overlayfs", "native"]) add(t, `prepare+commit ops/s, 100-deep chain (${sn})`, await chainOps(t, sn, `chain-${sn}-${i}`).catch(tagged));
        add(t, "unpack 5 x 20 MB random layers (s)", await unpack(t, uploaded.get(t.name)!.big, `big-${i}`).catch(tagged));
        add(t, "unpack 3 x 2000 small files (s)", await unpack(t, uploaded.get(t.name)!.small, `small-${i}`).catch(tagged));
      }
    }
  } finally {
    for (const t of targets) await t.stop();
    testChannels.close();
  }
  const c = samples.containerd!;
  const f = samples.flotilla!;
  console.log("\n| measure | containerd | flotilla | ratio (higher = flotilla faster) |\n|---|---|---|---|");
  for (const k of Object.keys(c)) {
    const cm = median(c[k]!);
    const fm = median(f[k]!);
    const ratio = k.includes("ops/s") ? fm / cm : cm / fm;
    console.log(`| ${k} | ${cm.toFixed(2)} | ${fm.toFixed(2)} | ${ratio.toFixed(2)} |`);
  }
}

main().then(() => process.exit(0), (e) => {
  console.error(e);
  process.exit(1);
});
