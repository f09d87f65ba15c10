/**
 * Images benchmarks (issue 5), Flotilla side by side with a reference containerd in the same run, as ratios:
 * - full `ctr images pull --plain-http` (fetch + unpack) from a loopback registry of a ~100 MB 5-layer image
 *   and of a 6,000-file image (each run starts from an empty store: `images rm --sync` in between);
 * - `ctr images ls` with 500 images;
 * - `ctr images rm --sync` of a 5-layer image (time until its garbage is gone).
 *
 *   npm run bench images
 *   node dist/bench/images.js [--runs N] [--big-mib N] [--files N] [--images N]
 */
import * as grpc from "@grpc/grpc-js";
import { encode } from "../libs/proto";
import { median, report, sideBySide, type Row, type Target } from "./lib";
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

export async function run(argv: string[] = process.argv.slice(2)): Promise<Row[]> {
  const a = parseArgs(argv);
  const reg = await startRegistry();
  try {
    const per = Math.floor((a.bigMiB * 1024 * 1024) / 3);
    const big = buildBusyboxImage({ tag: "big", extraLayers: [{ size: per, files: 4 }, { size: per, files: 4 }, { size: per, files: 4 }] });
    const many = buildBusyboxImage({ tag: "many", extraLayers: [{ size: a.files * 512, files: a.files }] });
    await reg.push("bench/big", "1", big);
    await reg.push("bench/many", "1", many);
    const bigRef = `${reg.host}/bench/big:1`;
    const manyRef = `${reg.host}/bench/many:1`;
    const res = await sideBySide(async (t) => {
      const timedPull = async (ref: string): Promise<number> => {
        const times: number[] = [];
        for (let i = 0; i < a.runs + 1; i++) {
          const t0 = process.hrtime.bigint();
          await must(t, ["images", "pull", "--plain-http", ref]);
          if (i > 0) times.push(Number(process.hrtime.bigint() - t0) / 1e6); // the first run warms the registry and page cache
          await must(t, ["images", "rm", "--sync", ref]);
        }
        times.sort((x, y) => x - y);
        return times[Math.floor(times.length / 2)]!;
      };
      const pullBig = await timedPull(bigRef);
      const pullMany = await timedPull(manyRef);

      const rmTimes: number[] = [];
      for (let i = 0; i < a.runs; i++) {
        await must(t, ["images", "pull", "--plain-http", bigRef]);
        const t0 = process.hrtime.bigint();
        await must(t, ["images", "rm", "--sync", bigRef]);
        rmTimes.push(Number(process.hrtime.bigint() - t0) / 1e6);
      }
      rmTimes.sort((x, y) => x - y);
      const rmSync = rmTimes[Math.floor(rmTimes.length / 2)]!;

      await must(t, ["content", "fetch", "--plain-http", manyRef]);
      await createImages(t, many, a.images);
      const ls = await median(a.runs, () => must(t, ["images", "ls"]), 1);
      const lsq = await median(a.runs, () => must(t, ["images", "ls", "-q"]), 1);
      return { pullBig, pullMany, rmSync, ls, lsq };
    });
    return [
      { benchmark: `ctr images pull, ${a.bigMiB} MB 5-layer image (median of ${a.runs})`, unit: "ms", flotilla: res.flotilla.pullBig, containerd: res.containerd.pullBig, lowerIsBetter: true },
      { benchmark: `ctr images pull, ${a.files}-file image (median of ${a.runs})`, unit: "ms", flotilla: res.flotilla.pullMany, containerd: res.containerd.pullMany, lowerIsBetter: true },
      { benchmark: `ctr images rm --sync, 5-layer image (median of ${a.runs})`, unit: "ms", flotilla: res.flotilla.rmSync, containerd: res.containerd.rmSync, lowerIsBetter: true },
      { benchmark: `ctr images ls, ${a.images} images (median of ${a.runs})`, unit: "ms", flotilla: res.flotilla.ls, containerd: res.containerd.ls, lowerIsBetter: true },
      { benchmark: `ctr images ls -q, ${a.images} images (median of ${a.runs})`, unit: "ms", flotilla: res.flotilla.lsq, containerd: res.containerd.lsq, lowerIsBetter: true },
    ];
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
