/**
 * Issue 2 benchmarks: `ctr version` round trip and `ctr namespaces ls` with 1,000 namespaces; and (issue 17,
 * issue 19 item 10) how long each system takes from spawn to answering `ctr version`, and to stop.
 */
import * as grpc from "@grpc/grpc-js";
import { encode } from "../libs/proto";
import { report, sideBySide, median, startContainerd, startFlotilla, type Row, type Target } from "./lib";

const identity = (b: Buffer): Buffer => b;

/** Create namespaces straight over gRPC (8 in flight), as fast as the server accepts them. */
async function createNamespaces(t: Target, n: number): Promise<void> {
  const c = new grpc.Client(`unix://${t.socket}`, grpc.credentials.createInsecure());
  const md = new grpc.Metadata();
  md.set("containerd-namespace", "default"); // as ctr sends it
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < n) {
      const i = next++;
      const body = encode("containerd.services.namespaces.v1.CreateNamespaceRequest", { namespace: { name: `bench-${i}`, labels: { i: String(i) } } });
      await new Promise<void>((resolve, reject) => {
        c.makeUnaryRequest("/containerd.services.namespaces.v1.Namespaces/Create", identity, identity, body, md, {}, (err) => (err ? reject(err) : resolve()));
      });
    }
  };
  await Promise.all(Array.from({ length: 8 }, worker));
  c.close();
}

/**
 * Start and stop a system `runs` times; the minimum of each (the machine is shared, so the least
 * disturbed run says the most). Start: from spawning it (`flotilla up` / containerd) to its first
 * `ctr version` answer, the wait for every process to serve included. Stop: SIGTERM until it has exited
 * and its temporary root is removed.
 */
async function startStop(start: () => Promise<Target>, runs = 3): Promise<{ startMs: number; stopMs: number }> {
  let startMs = Infinity;
  let stopMs = Infinity;
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    const t = await start();
    try {
      const v = await t.ctr(["version"]);
      if (v.code !== 0) throw new Error(`ctr version: ${v.stderr}`);
      startMs = Math.min(startMs, performance.now() - t0);
    } finally {
      const t1 = performance.now();
      await t.stop();
      stopMs = Math.min(stopMs, performance.now() - t1);
    }
  }
  return { startMs, stopMs };
}

export async function run(): Promise<Row[]> {
  const f = await startStop(startFlotilla);
  const c = await startStop(startContainerd);
  const res = await sideBySide(async (t) => {
    const version = await median(30, () => t.ctr(["version"]));
    const t0 = Date.now();
    await createNamespaces(t, 1000);
    const createMs = Date.now() - t0;
    const nsls = await median(10, async () => {
      const r = await t.ctr(["namespaces", "ls"]);
      if (r.code !== 0) throw new Error(r.stderr);
    }, 1);
    return { version, nsls, createMs };
  });
  return [
    { benchmark: "ctr version (median of 30)", unit: "ms", flotilla: res.flotilla.version, containerd: res.containerd.version, lowerIsBetter: true },
    { benchmark: "create 1,000 namespaces (8 in flight)", unit: "ms", flotilla: res.flotilla.createMs, containerd: res.containerd.createMs, lowerIsBetter: true },
    { benchmark: "ctr namespaces ls, 1,000 namespaces (median of 10)", unit: "ms", flotilla: res.flotilla.nsls, containerd: res.containerd.nsls, lowerIsBetter: true },
    { benchmark: "start: spawn to first ctr version (min of 3)", unit: "ms", flotilla: f.startMs, containerd: c.startMs, lowerIsBetter: true },
    { benchmark: "stop: SIGTERM to exit, root removed (min of 3)", unit: "ms", flotilla: f.stopMs, containerd: c.stopMs, lowerIsBetter: true },
  ];
}

if (require.main === module) {
  run().then(report, (e) => {
    console.error(e);
    process.exit(1);
  });
}
