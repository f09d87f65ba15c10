/**
 * Images benchmarks (issue 5), Flotilla side by side with a reference containerd in the same run, as ratios
 * (rounds alternate between the two, so load from elsewhere on the machine hits both alike):
 * - full `ctr images pull --plain-http` (fetch + unpack) from a loopback registry of a ~100 MB 5-layer image
 *   and of a 6,000-file image (each run starts from an empty store: `images rm --sync` in between);
 * - the unpack part of `ctr images pull` (issue 4): the blobs are fetched first (`ctr content fetch`), then
 *   `ctr images pull` is timed, which finds every blob present and only unpacks;
 * - `ctr images ls` with 500 images;
 * - `ctr images rm --sync` of a 5-layer image (time until its garbage is gone).
 *
 *   npm run bench images
 *   node dist/bench/images.js [--runs N] [--big-mib N] [--files N] [--images N]
 */
import * as grpc from "@grpc/grpc-js";
import { encode } from "../libs/proto";
import { report, startContainerd, startFlotilla, type Row, type Target } from "./lib";
import { buildBusyboxImage, startRegistry, type BuiltImage } from "../test/images/registry";

interface Args {
  runs: number;
  bigMiB: number;
  files: number;
  images: number;
}

function parseArgs(argv: string[]): Args {
  const a: Args = { runs: 5, bigMiB: 100, files: 6000, images: 500 };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--runs") a.runs = Number(argv[++i]);
    else if (argv[i] === "--big-mib") a.bigMiB = Number(argv[++i]);
    else if (argv[i] === "--files") a.files = Number(argv[++i]);
    else if (argv[i] === "--images") a.images = Number(argv[++i]);
  }
  return a;
}

const identity = (b: Buffer): Buffer => b;

/** Create `n` images pointing at `img` straight over gRPC (8 in flight). */
async function createImages(t: Target, img: BuiltImage, n: number): Promise<void> {
  const c = new grpc.Client(`unix://${t.socket}`, grpc.credentials.createInsecure());
  const md = new grpc.Metadata();
  md.set("containerd-namespace", "bench");
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < n) {
      const i = next++;
      const body = encode("containerd.services.images.v1.CreateImageRequest", {
        image: { name: `bench.local/many/img:${i}`, labels: { i: String(i) }, target: { media_type: img.root.mediaType, digest: img.root.digest, size: img.root.data.length } },
      });
      await new Promise<void>((resolve, reject) => {
        c.makeUnaryRequest("/containerd.services.images.v1.Images/Create", identity, identity, body, md, {}, (err) => (err ? reject(err) : resolve()));
      });
    }
  };
  await Promise.all(Array.from({ length: 8 }, worker));
  c.close();
}

async function must(t: Target, args: string[]): Promise<void> {
  const r = await t.ctr(args, { namespace: "bench", timeoutMs: 600000 });
  if (r.code !== 0) throw new Error(`${t.name}: ctr ${args.join(" ")}: ${r.stderr}`);
}

const medianOf = (xs: number[]): number => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)]!;

async function timed(fn: () => Promise<void>): Promise<number> {
  const t0 = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

/**
 * Run `round` on each system in turn, `runs` times (plus one untimed warm-up round), so that load from
 * elsewhere on the machine hits both alike; medians per system.
 */
async function alternate(targets: Target[], runs: number, round: (t: Target) => Promise<number>): Promise<number[]> {
  const samples = targets.map(() => [] as number[]);
  for (let i = 0; i <= runs; i++) {
    for (let k = 0; k < targets.length; k++) {
      const ms = await round(targets[k]!);
      if (i > 0) samples[k]!.push(ms);
    }
  }
  return samples.map(medianOf);
}

export async function run(argv: string[] = process.argv.slice(2)): Promise<Row[]> {
  const a = parseArgs(argv);
  const reg = await startRegistry();
  const targets: Target[] = [];
  try {
    const per = Math.floor((a.bigMiB * 1024 * 1024) / 3);
    const big = buildBusyboxImage({ tag: "big", extraLayers: [{ size: per, files: 4 }, { size: per, files: 4 }, { size: per, files: 4 }] });
    const many = buildBusyboxImage({ tag: "many", extraLayers: [{ size: a.files * 512, files: a.files }] });
    await reg.push("bench/big", "1", big);
    await reg.push("bench/many", "1", many);
    const bigRef = `${reg.host}/bench/big:1`;
    const manyRef = `${reg.host}/bench/many:1`;
    targets.push(await startFlotilla(), await startContainerd());

    // A full pull from an empty store (each round removes the image with --sync afterwards).
    const pull = (ref: string) => (t: Target) => timed(() => must(t, ["images", "pull", "--plain-http", ref])).then(async (ms) => {
      await must(t, ["images", "rm", "--sync", ref]);
      return ms;
    });
    const [pullBigF, pullBigC] = await alternate(targets, a.runs, pull(bigRef));
    const [pullManyF, pullManyC] = await alternate(targets, a.runs, pull(manyRef));
    // Unpack only: fetch untimed, then time the pull that finds every blob present.
    const unpack = (ref: string) => async (t: Target) => {
      await must(t, ["content", "fetch", "--plain-http", ref]);
      return pull(ref)(t);
    };
    const [unpackBigF, unpackBigC] = await alternate(targets, a.runs, unpack(bigRef));
    const [unpackManyF, unpackManyC] = await alternate(targets, a.runs, unpack(manyRef));
    const [rmF, rmC] = await alternate(targets, a.runs, async (t) => {
      await must(t, ["images", "pull", "--plain-http", bigRef]);
      return timed(() => must(t, ["images", "rm", "--sync", bigRef]));
    });
    for (const t of targets) {
      await must(t, ["content", "fetch", "--plain-http", manyRef]);
      await createImages(t, many, a.images);
    }
    const [lsF, lsC] = await alternate(targets, a.runs, (t) => timed(() => must(t, ["images", "ls"])));
    const [lsqF, lsqC] = await alternate(targets, a.runs, (t) => timed(() => must(t, ["images", "ls", "-q"])));
    const row = (benchmark: string, f: number, c: number): Row => ({ benchmark, unit: "ms", flotilla: f, containerd: c, lowerIsBetter: true });
    return [
      row(`ctr images pull, ${a.bigMiB} MB 5-layer image (median of ${a.runs})`, pullBigF!, pullBigC!),
      row(`ctr images pull, ${a.files}-file image (median of ${a.runs})`, pullManyF!, pullManyC!),
      row(`unpack in ctr images pull (blobs fetched first), ${a.bigMiB} MB 5-layer image (median of ${a.runs})`, unpackBigF!, unpackBigC!),
      row(`unpack in ctr images pull (blobs fetched first), ${a.files}-file image (median of ${a.runs})`, unpackManyF!, unpackManyC!),
      row(`ctr images rm --sync, 5-layer image (median of ${a.runs})`, rmF!, rmC!),
      row(`ctr images ls, ${a.images} images (median of ${a.runs})`, lsF!, lsC!),
      row(`ctr images ls -q, ${a.images} images (median of ${a.runs})`, lsqF!, lsqC!),
    ];
  } finally {
    for (const t of targets) await t.stop();
    await reg.stop();
  }
}

if (require.main === module) {
  run().then(report, (e) => {
    console.error(e);
    process.exit(1);
  });
}
