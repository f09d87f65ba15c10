/**
 * A focused probe of what `ctr images ls` costs on the backends, without the gateway hop: the same RPCs
 * ctr 1.6 makes, in the same order, sent straight to the images and content processes' sockets.
 *
 * Per image of an index root (images.Image.Size + images.Platforms over the proxy content store, whose
 * ReaderAt asks Info before every Read): Info+Read of the index (Size), Info+Read of the host manifest
 * (Size), Info+Read of the index again (Platforms) — six calls; one Images/List before them.
 *
 *   node dist/bench/images-ls-backend.js [--images N] [--runs N] [--containerd]
 *
 * Prints medians: the whole replay against the backends (and, with --containerd, against a reference
 * containerd's socket), Images/List alone, and `ctr images ls` / `ctr -a <images socket> images ls -q`.
 */
import * as fs from "node:fs";
import * as grpc from "@grpc/grpc-js";
import { encode } from "../libs/proto";
import { buildBusyboxImage, startRegistry, type BuiltImage } from "../test/images/registry";
import { startContainerd, startFlotilla, type Target } from "./lib";
import { unixPath } from "../libs/config";

const identity = (b: Buffer): Buffer => b;

interface Sockets {
  images: string;
  content: string;
}

function clientFor(sock: string): grpc.Client {
  return new grpc.Client(`unix://${sock}`, grpc.credentials.createInsecure());
}

function unary(c: grpc.Client, method: string, body: Buffer, md: grpc.Metadata): Promise<Buffer> {
  return new Promise((resolve, reject) => c.makeUnaryRequest(method, identity, identity, body, md, {}, (e, r) => (e ? reject(e) : resolve(r!))));
}

function stream(c: grpc.Client, method: string, body: Buffer, md: grpc.Metadata): Promise<void> {
  return new Promise((resolve, reject) => {
    const s = c.makeServerStreamRequest(method, identity, identity, body, md, {});
    s.on("data", () => undefined);
    s.on("end", () => resolve());
    s.on("error", reject);
  });
}

/** One `ctr images ls`, replayed: List, then six content calls per image, one at a time. */
async function replay(s: Sockets, img: BuiltImage, n: number): Promise<number> {
  const ic = clientFor(s.images);
  const cc = s.content === s.images ? ic : clientFor(s.content);
  const md = new grpc.Metadata();
  md.set("containerd-namespace", "bench");
  const info = (d: string): Buffer => encode("containerd.services.content.v1.InfoRequest", { digest: d });
  const read = (b: { digest: string; data: Buffer }): Buffer => encode("containerd.services.content.v1.ReadContentRequest", { digest: b.digest, size: b.data.length });
  const calls: [string, Buffer][] = [
    ["Info", info(img.root.digest)], ["Read", read(img.root)],
    ["Info", info(img.manifest.digest)], ["Read", read(img.manifest)],
    ["Info", info(img.root.digest)], ["Read", read(img.root)],
  ];
  // Warm the channels.
  await unary(ic, "/containerd.services.images.v1.Images/List", encode("containerd.services.images.v1.ListImagesRequest", {}), md);
  const t0 = process.hrtime.bigint();
  await unary(ic, "/containerd.services.images.v1.Images/List", encode("containerd.services.images.v1.ListImagesRequest", {}), md);
  for (let i = 0; i < n; i++) {
    for (const [m, body] of calls) {
      if (m === "Info") await unary(cc, "/containerd.services.content.v1.Content/Info", body, md);
      else await stream(cc, "/containerd.services.content.v1.Content/Read", body, md);
    }
  }
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  ic.close();
  if (cc !== ic) cc.close();
  return ms;
}

async function listOnly(sock: string, runs: number): Promise<number> {
  const c = clientFor(sock);
  const md = new grpc.Metadata();
  md.set("containerd-namespace", "bench");
  const body = encode("containerd.services.images.v1.ListImagesRequest", {});
  await unary(c, "/containerd.services.images.v1.Images/List", body, md);
  const xs: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = process.hrtime.bigint();
    await unary(c, "/containerd.services.images.v1.Images/List", body, md);
    xs.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  c.close();
  return median(xs);
}

/** CPU time (user + system) a process has used so far, in ms. */
function cpuMs(pid: number | undefined): number {
  if (!pid) return NaN;
  const f = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
  const parts = f.slice(f.lastIndexOf(")") + 2).split(" ");
  return ((Number(parts[11]) + Number(parts[12])) * 1000) / 100;
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function createImages(sock: string, img: BuiltImage, n: number): Promise<void> {
  const c = clientFor(sock);
  const md = new grpc.Metadata();
  md.set("containerd-namespace", "bench");
  for (let i = 0; i < n; i++) {
    const body = encode("containerd.services.images.v1.CreateImageRequest", {
      image: { name: `bench.local/many/img:${i}`, labels: { i: String(i) }, target: { media_type: img.root.mediaType, digest: img.root.digest, size: img.root.data.length } },
    });
    await unary(c, "/containerd.services.images.v1.Images/Create", body, md);
  }
  c.close();
}

async function timedCtr(t: Target, args: string[], runs: number, socket?: string): Promise<number> {
  const xs: number[] = [];
  for (let i = 0; i <= runs; i++) {
    const t0 = process.hrtime.bigint();
    const r = socket
      ? await (await import("../test/harness")).runCtr(socket, args, { namespace: "bench" })
      : await t.ctr(args, { namespace: "bench" });
    if (r.code !== 0) throw new Error(`ctr ${args.join(" ")}: ${r.stderr}`);
    if (i > 0) xs.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  return median(xs);
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const opt = (name: string, d: number): number => (argv.includes(name) ? Number(argv[argv.indexOf(name) + 1]) : d);
  const n = opt("--images", 500);
  const runs = opt("--runs", 5);
  const reg = await startRegistry();
  const img = buildBusyboxImage({ tag: "probe" });
  await reg.push("bench/probe", "1", img);
  const ref = `${reg.host}/bench/probe:1`;
  const targets: Target[] = [];
  try {
    const f = await startFlotilla();
    targets.push(f);
    const cfg = (await import("../libs/config")).loadConfig(f.stack.configFile);
    const backends: Sockets = { images: unixPath(cfg.flotilla.services.images.address)!, content: unixPath(cfg.flotilla.services.content.address)! };
    const fetched = await f.ctr(["content", "fetch", "--plain-http", ref], { namespace: "bench" });
    if (fetched.code !== 0) throw new Error(fetched.stderr);
    await createImages(backends.images, img, n);
    const rows: [string, number][] = [];
    const rep: number[] = [];
    const cpu0 = cpuMs(f.pid("content")), icpu0 = cpuMs(f.pid("images"));
    for (let i = 0; i < runs; i++) rep.push(await replay(backends, img, n));
    rows.push([`replay of ctr images ls on the backends, ${n} images (${6 * n + 1} calls)`, median(rep)]);
    rows.push([`  content process CPU per replay`, (cpuMs(f.pid("content")) - cpu0) / runs]);
    rows.push([`  images process CPU per replay`, (cpuMs(f.pid("images")) - icpu0) / runs]);
    rows.push([`Images/List on the images socket, ${n} images`, await listOnly(backends.images, runs * 4)]);
    rows.push([`ctr -a <images.sock> images ls -q`, await timedCtr(f, ["images", "ls", "-q"], runs, backends.images)]);
    rows.push([`ctr images ls (through the gateway)`, await timedCtr(f, ["images", "ls"], runs)]);
    if (argv.includes("--containerd")) {
      const c = await startContainerd();
      targets.push(c);
      const r = await c.ctr(["content", "fetch", "--plain-http", ref], { namespace: "bench" });
      if (r.code !== 0) throw new Error(r.stderr);
      await createImages(c.socket, img, n);
      const crep: number[] = [];
      const ccpu0 = cpuMs(c.pid());
      for (let i = 0; i < runs; i++) crep.push(await replay({ images: c.socket, content: c.socket }, img, n));
      rows.push([`containerd: replay, ${n} images`, median(crep)]);
      rows.push([`  containerd CPU per replay`, (cpuMs(c.pid()) - ccpu0) / runs]);
      rows.push([`containerd: Images/List, ${n} images`, await listOnly(c.socket, runs * 4)]);
      rows.push([`containerd: ctr images ls`, await timedCtr(c, ["images", "ls"], runs)]);
    }
    for (const [k, v] of rows) console.log(`${k.padEnd(72)} ${v.toFixed(1).padStart(9)} ms`);
  } finally {
    for (const t of targets) await t.stop();
    await reg.stop();
  }
}

if (require.main === module) {
  main().catch((e) => {
    console.error(e);
    process.exit(1);
  });
}
