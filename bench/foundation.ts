/** Issue 2 benchmarks: `ctr version` round trip and `ctr namespaces ls` with 1,000 namespaces. */
import * as grpc from "@grpc/grpc-js";
import { encode } from "../libs/proto";
import { report, sideBySide, median, type Row, type Target } from "./lib";

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

export async function run(): Promise<Row[]> {
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
  ];
}

if (require.main === module) {
  run().then(report, (e) => {
    console.error(e);
    process.exit(1);
  });
}
