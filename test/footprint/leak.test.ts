/**
 * Issue 17 leak check: a small workload through the real `ctr` against a `bin/flotilla up` stack (a pull
 * from a loopback registry, a few `ctr run --rm`, a content ingest and removal, the image removed with
 * --sync), repeated; after each repeat every service's V8 heap in use (plus its external memory: Buffers) is read after a full GC.
 *
 * Forcing the GC from outside: the services run with `--heapsnapshot-signal=SIGUSR2` (FLOTILLA_NODE_ARGS,
 * which the supervisor appends to every service's Node flags); on SIGUSR2 a process writes a heap
 * snapshot, and V8 collects all garbage before it takes one. The snapshot is written synchronously on the
 * main thread, so once its file exists, the next /metrics answer (prom-client's default
 * `nodejs_heap_size_used_bytes`, on each service's metrics_address) comes after that GC: the heap in use it
 * shows is what survived it plus the little the scrape itself allocated (likewise `nodejs_external_memory_bytes`).
 *
 * Verdict (a leak check, not a timing): one warm-up repeat first (first-use work: lazily loaded modules,
 * compiled code, caches filled once), then three measured repeats h1, h2, h3 per service (heap in use plus external memory). A service fails
 * when h3 > h2 + STEP_MARGIN (still growing after two rounds of the same work), or when h1 < h2 < h3 and
 * h3 - h1 > TREND_MARGIN (steady growth across all three). The margins are fixed, well above the noise
 * measured here (a few hundred KiB between repeats: the scrape's own allocation, timers, the NATS client)
 * and well below what a per-call leak of this workload leaves (a record kept per run, per ingest or per
 * pull grows a heap by far more per repeat once it holds a buffer, a span or a request).
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as http from "node:http";
import * as os from "node:os";
import * as path from "node:path";
import { startStack, sleep, waitFor, type Stack } from "../harness";
import { buildBusyboxImage, startRegistry, type Registry } from "../images/registry";
import { SERVICE_NAMES, type ServiceName } from "#libs/config";

const MiB = 1024 * 1024;
/** Allowed growth from repeat 2 to repeat 3. */
const STEP_MARGIN = 2 * MiB;
/** Allowed growth from repeat 1 to repeat 3 when it grew at every repeat. */
const TREND_MARGIN = 3 * MiB;
const NS = "footprint";

function get(url: string): Promise<string> {
  return new Promise((resolve, reject) => {
    http.get(url, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => (res.statusCode === 200 ? resolve(Buffer.concat(chunks).toString()) : reject(new Error(`${url}: HTTP ${res.statusCode}`))));
      res.on("error", reject);
    }).on("error", reject);
  });
}

/** The value of a prom-client default series (labelled only with the service) in a /metrics body. */
function metricValue(body: string, name: string): number {
  const m = new RegExp(`^${name}(?:\\{[^}]*\\})?\\s+([0-9.e+]+)`, "m").exec(body);
  assert.ok(m, `/metrics has ${name}`);
  return Number(m[1]);
}

/**
 * Bytes of V8 heap in use in `service` after a full GC (see the file comment), and of external memory
 * (ArrayBuffer and Buffer backing stores, which V8 frees with their objects: a kept Buffer shows there).
 */
async function heapAfterGc(stack: Stack, snapDir: string, service: ServiceName): Promise<{ heap: number; external: number }> {
  const pid = stack.pidOf(service);
  assert.ok(pid, `${service} has a PID`);
  process.kill(pid, "SIGUSR2");
  const file = await waitFor(`${service}'s heap snapshot`, () => fs.readdirSync(snapDir).find((f) => f.includes(`.${pid}.`) && f.endsWith(".heapsnapshot")), 60000, 50);
  const body = await get(`http://${stack.metricsAddress(service)}/metrics`);
  fs.rmSync(path.join(snapDir, file), { force: true });
  return { heap: metricValue(body, "nodejs_heap_size_used_bytes"), external: metricValue(body, "nodejs_external_memory_bytes") };
}

/** Threads of a process (the main thread, libuv's pool, V8's platform threads, worker threads). */
const threads = (pid: number): number => fs.readdirSync(`/proc/${pid}/task`).length;

describe("footprint: memory a workload takes is given back", () => {
  let reg: Registry;
  let stack: Stack;
  let snapDir: string;
  let ref: string;

  before(async () => {
    reg = await startRegistry();
    await reg.push("footprint/busybox", "1", buildBusyboxImage());
    ref = `${reg.host}/footprint/busybox:1`;
    snapDir = fs.mkdtempSync(path.join(os.tmpdir(), "fp-snap-"));
    const saved = process.env.FLOTILLA_NODE_ARGS;
    process.env.FLOTILLA_NODE_ARGS = `--heapsnapshot-signal=SIGUSR2 --diagnostic-dir=${snapDir}`;
    try {
      stack = await startStack({ metrics: true, logLevel: "warn" });
    } finally {
      if (saved === undefined) delete process.env.FLOTILLA_NODE_ARGS;
      else process.env.FLOTILLA_NODE_ARGS = saved;
    }
  });

  after(async () => {
    await stack?.stop();
    await reg?.stop();
    if (snapDir) fs.rmSync(snapDir, { recursive: true, force: true });
  });

  const must = async (args: string[], input?: Buffer): Promise<string> => {
    const r = await stack.ctr(args, { namespace: NS, input, timeoutMs: 120000 });
    assert.equal(r.code, 0, `ctr ${args.join(" ")}: ${r.stderr}`);
    return r.stdout;
  };

  async function workload(rep: number): Promise<void> {
    await must(["images", "pull", "--plain-http", ref]);
    for (let i = 0; i < 3; i++) assert.equal((await must(["run", "--rm", ref, `fp-${rep}-${i}`, "echo", `run ${i}`])).trim(), `run ${i}`);
    const blob = crypto.randomBytes(4 * MiB);
    const digest = "sha256:" + crypto.createHash("sha256").update(blob).digest("hex");
    await must(["content", "ingest", "--expected-size", String(blob.length), "--expected-digest", digest, `fp-ingest-${rep}`], blob);
    assert.match(await must(["content", "ls", "-q"]), new RegExp(digest.slice(7)));
    await must(["content", "rm", digest]);
    await must(["images", "rm", "--sync", ref]);
  }

  // Runs first, on the fresh stack: no layer has been applied yet.
  it("the snapshots process ends its layer-apply worker threads once idle (a worker never collects what its last layer left)", async () => {
    const pid = stack.pidOf("snapshots")!;
    await sleep(1000);
    const before = threads(pid);
    await must(["images", "pull", "--plain-http", ref]);
    assert.match(await must(["images", "ls", "-q"]), new RegExp(ref.replace(/[.]/g, "\\.")));
    await waitFor("the snapshots process's apply workers to end", () => threads(pid) <= before || undefined, 20000, 200);
    await must(["images", "rm", "--sync", ref]);
  });

  it("reads every service's heap after a forced GC, three repeats after a warm-up, and none keeps growing", async () => {
    await workload(0);
    // Per service and repeat: V8 heap in use plus external memory after the GC.
    const heaps = new Map<ServiceName, number[]>(SERVICE_NAMES.map((s) => [s, []]));
    const details = new Map<ServiceName, string[]>(SERVICE_NAMES.map((s) => [s, []]));
    for (let rep = 1; rep <= 3; rep++) {
      await workload(rep);
      await sleep(1000);
      for (const s of SERVICE_NAMES) {
        const h = await heapAfterGc(stack, snapDir, s);
        heaps.get(s)!.push(h.heap + h.external);
        details.get(s)!.push(`${(h.heap / MiB).toFixed(2)}+${(h.external / MiB).toFixed(2)}`);
      }
    }
    const lines = [...heaps].map(([s, h]) => `${s}: ${h.map((b) => (b / MiB).toFixed(2)).join(" -> ")} MiB (heap+external: ${details.get(s)!.join(", ")})`);
    console.log(lines.join("\n"));
    const growing: string[] = [];
    for (const [s, [h1, h2, h3]] of heaps as Map<ServiceName, [number, number, number]>) {
      assert.ok(h1 > MiB && h2 > MiB && h3 > MiB, `${s}: a plausible heap size was read`);
      if (h3 - h2 > STEP_MARGIN) growing.push(`${s} grew by ${((h3 - h2) / MiB).toFixed(2)} MiB from repeat 2 to 3`);
      if (h1 < h2 && h2 < h3 && h3 - h1 > TREND_MARGIN) growing.push(`${s} grew at every repeat, ${((h3 - h1) / MiB).toFixed(2)} MiB in all`);
    }
    assert.deepEqual(growing, [], lines.join("\n"));
  });
});
