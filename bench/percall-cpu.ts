/**
 * CPU per call of the gRPC plumbing, measured as process CPU time (utime+stime from /proc/<pid>/stat)
 * over thousands of sequential calls, so a loaded machine's wall-clock noise does not matter.
 *
 * Three processes: an owner (RpcServer with in-memory Namespaces Get and Content Info handlers, metrics
 * on, propagating tracer), a gateway front forwarding to it, and this process as the client (raw HTTP/2
 * shaped like ctr's calls, or RpcClient as the processes use it between themselves).
 *
 *   node dist/bench/percall-cpu.js [--calls N] [--prof DIR]
 *
 * Prints CPU microseconds per call for the owner (direct and behind the front), the front, and the
 * client side of RpcClient.
 */
import { spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as http2 from "node:http2";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { background } from "../libs/context";
import { RpcClient } from "../libs/grpc/client";
import { RpcServer, type Msg } from "../libs/grpc/server";
import { createLogger } from "../libs/log";
import { Metrics } from "../libs/metrics";
import { encode } from "../libs/proto";
import { initTracing } from "../libs/tracing";
import { GatewayFront } from "../services/gateway/src/front";
import { testChannels } from "../test/harness";

const NS = "containerd.services.namespaces.v1.Namespaces";
const CONTENT = "containerd.services.content.v1.Content";
const DIGEST = "sha256:" + "ab".repeat(32);

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

async function child(role: string, dir: string): Promise<void> {
  initTracing(role, "");
  const log = createLogger(role, "warn");
  const metrics = new Metrics(role);
  if (role === "owner") {
    const s = new RpcServer({ service: "owner", log, metrics });
    s.addService(NS, {
      Get: async (_ctx, req: Msg) => ({ namespace: { name: req.name, labels: { "containerd.io/defaults/snapshotter": "overlayfs", i: "1" } } }),
    });
    s.addService(CONTENT, {
      Info: async (_ctx, req: Msg) => ({
        info: { digest: req.digest, size: 1234, created_at: { seconds: 1700000000, nanos: 5 }, updated_at: { seconds: 1700000000, nanos: 5 }, labels: { "containerd.io/gc.ref.content.m.0": DIGEST } },
      }),
    });
    await s.listen(`unix://${dir}/owner.sock`);
  } else if (role === "floor") {
    // The floor: Node's HTTP/2 answering a fixed unary response with no gRPC logic at all.
    const res = encode("containerd.services.namespaces.v1.GetNamespaceResponse", { namespace: { name: "default", labels: { a: "b" } } });
    const frame = Buffer.concat([Buffer.from([0, 0, 0, 0, res.length]), res]);
    const srv = http2.createServer();
    srv.on("stream", (st) => {
      st.on("data", () => undefined);
      st.on("end", () => {
        st.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true });
        st.once("wantTrailers", () => st.sendTrailers({ "grpc-status": "0" }));
        st.end(frame);
      });
    });
    await new Promise<void>((r) => srv.listen(`${dir}/floor.sock`, r));
  } else {
    const f = new GatewayFront({ routes: { [NS]: `unix://${dir}/owner.sock`, [CONTENT]: `unix://${dir}/owner.sock` }, local: `unix://${dir}/owner.sock`, log, metrics });
    await f.listen(`unix://${dir}/front.sock`);
  }
  process.stdout.write("ready\n");
  // Exit with the parent (its end of our stdin closes), writing the profile if asked.
  process.stdin.on("end", () => process.exit(0));
  process.stdin.resume();
}

function cpuTicks(pid: number): number {
  const s = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
  const f = s.slice(s.lastIndexOf(")") + 2).split(" ");
  return Number(f[11]) + Number(f[12]); // utime, stime (fields 14, 15)
}
const TICK_US = 1e6 / 100;

function start(role: string, dir: string, prof?: string): Promise<ChildProcess> {
  const args = [...(prof ? ["--cpu-prof", `--cpu-prof-dir=${prof}`, `--cpu-prof-name=${role}.cpuprofile`] : []), __filename, "--child", role, "--dir", dir];
  const c = spawn(process.execPath, args, { stdio: ["pipe", "pipe", "inherit"] });
  return new Promise((resolve, reject) => {
    c.stdout!.once("data", () => resolve(c));
    c.once("exit", (code) => reject(new Error(`${role} exited ${code}`)));
  });
}

/** Sequential unary calls over one raw HTTP/2 session, headers shaped like ctr's (grpc-go). */
async function rawCalls(sock: string, path: string, body: Buffer, n: number): Promise<void> {
  // The servers rotate sessions (GOAWAY after some hundreds of streams): reconnect as grpc-go does.
  const connect = (): http2.ClientHttp2Session => {
    const c = http2.connect("http://localhost", { createConnection: () => net.connect({ path: sock }) });
    c.on("goaway", () => (s = connect()));
    c.on("error", () => undefined);
    return c;
  };
  let s = connect();
  const frame = Buffer.concat([Buffer.from([0, 0, 0, 0, 0]), body]);
  frame.writeUInt32BE(body.length, 1);
  const one = (): Promise<void> =>
    new Promise((resolve, reject) => {
      const st = s.request({ ":method": "POST", ":path": path, ":scheme": "http", ":authority": "localhost", "content-type": "application/grpc", te: "trailers", "user-agent": "containerd/v1.6.20 grpc-go/1.50.1", "containerd-namespace": "default" });
      let status: string | undefined;
      st.on("trailers", (t) => (status = String(t["grpc-status"])));
      st.on("response", (h) => {
        if (h["grpc-status"] !== undefined) status = String(h["grpc-status"]);
      });
      st.on("data", () => undefined);
      st.on("end", () => (status === "0" ? resolve() : reject(new Error(`status ${status}`))));
      st.on("error", reject);
      st.end(frame);
    });
  for (let i = 0; i < n; i++) await one();
  s.close();
}

async function measure(label: string, pids: Record<string, number>, n: number, work: () => Promise<void>): Promise<void> {
  const before = Object.fromEntries(Object.entries(pids).map(([k, p]) => [k, cpuTicks(p)]));
  const self0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  await work();
  const wall = Number(process.hrtime.bigint() - t0) / 1e6;
  const self = process.cpuUsage(self0);
  const parts = Object.entries(pids).map(([k, p]) => `${k} ${(((cpuTicks(p) - before[k]!) * TICK_US) / n).toFixed(1)}`);
  parts.push(`client ${((self.user + self.system) / n).toFixed(1)}`);
  console.log(`${label.padEnd(34)} CPU us/call: ${parts.join("  ")}   wall ${(wall / n * 1000).toFixed(0)} us/call`);
}

async function main(): Promise<void> {
  const role = arg("--child");
  if (role) return child(role, arg("--dir")!);
  const n = Number(arg("--calls") ?? 5000);
  const prof = arg("--prof");
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "flt-percall-"));
  const owner = await start("owner", dir, prof);
  const front = await start("front", dir, prof);
  const pids = { owner: owner.pid!, front: front.pid! };
  const floor = arg("--only")?.includes("floor") ? await start("floor", dir) : undefined;
  try {
    const get = encode("containerd.services.namespaces.v1.GetNamespaceRequest", { name: "default" });
    const info = encode("containerd.services.content.v1.InfoRequest", { digest: DIGEST });
    await rawCalls(`${dir}/owner.sock`, `/${NS}/Get`, get, 500); // warm up both
    await rawCalls(`${dir}/front.sock`, `/${NS}/Get`, get, 500);
    const only = arg("--only");
    const want = (k: string): boolean => !only || only.split(",").includes(k);
    if (floor) {
      await rawCalls(`${dir}/floor.sock`, `/${NS}/Get`, get, 500);
      await measure("floor: bare Node http2 unary", { floor: floor.pid! }, n, () => rawCalls(`${dir}/floor.sock`, `/${NS}/Get`, get, n));
    }
    if (want("direct")) await measure("ns Get, direct to owner", { owner: pids.owner }, n, () => rawCalls(`${dir}/owner.sock`, `/${NS}/Get`, get, n));
    if (want("front")) await measure("ns Get, through the front", pids, n, () => rawCalls(`${dir}/front.sock`, `/${NS}/Get`, get, n));
    if (want("front")) await measure("content Info, through the front", pids, n, () => rawCalls(`${dir}/front.sock`, `/${CONTENT}/Info`, info, n));
    if (!want("client")) return;
    initTracing("client", "");
    const rc = new RpcClient(testChannels.get(`unix://${dir}/owner.sock`), CONTENT);
    const ctx = background("default");
    for (let i = 0; i < 500; i++) await rc.unary(ctx, "Info", { digest: DIGEST });
    await measure("content Info, RpcClient direct", { owner: pids.owner }, n, async () => {
      for (let i = 0; i < n; i++) await rc.unary(ctx, "Info", { digest: DIGEST });
    });
    testChannels.close();
  } finally {
    for (const c of [owner, front, ...(floor ? [floor] : [])]) {
      const gone = new Promise((r) => c.once("exit", r));
      c.stdin!.end();
      await gone;
    }
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

if (require.main === module) {
  main().catch((e) => {
    console.error(e);
    process.exit(1);
  });
}
