/**
 * The CRI (issue 13), Flotilla's cri process against containerd 1.6's CRI plugin, both up in the same run,
 * both configured as the CRI conformance kit configures containerd (its CRI tables, its hosts.toml mirrors
 * rewritten to a fixture registry on a free loopback port filled by the kit's images.sh), each on a CNI
 * network of its own (distinct bridge and /24), driven by the kit's crictl:
 * - pod start to a running container (`runp` + `create` + `start`, image already pulled) and its teardown
 *   (`stop` + `rm` + `stopp` + `rmp`), the two sides interleaved, median of N;
 * - 20 pods of 3 containers each: PSS (/proc/PID/smaps_rollup) of the stack's processes and shims (Flotilla:
 *   every service, supervisor, nats-server, warm and serving shims; containerd: the daemon and its shims), per container;
 * - critest's own `--benchmark` specs (`run-critest.sh SOCKET --benchmark`) on each side: the median of
 *   every measurement they report (N samples each, one at a time).
 *
 *   npm run bench cri
 *   node dist/bench/cri.js [--quick (N = 4)] [--n N (10)] [--pods N (20)] [--no-critest]
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { report, startContainerd, type Row, type Target } from "./lib";
import { flotillaProcs } from "./footprint";
import { memKiB, shimPidsOf } from "./tasks";
import { runCommand, sleep, type CtrOptions, type CtrResult } from "../test/harness";
import { startRegistry } from "../test/helpers/registry";
import { CRI_KIT, criToml, crictlOn, mirrorHosts, podConfig, startCriStack, type CriStack } from "../test/cri/helpers";
import { makeTestNet, type TestNet } from "../test/sandbox/net-helpers";

interface Args {
  n: number;
  pods: number;
  critest: boolean;
}

function parseArgs(argv: string[]): Args {
  const a: Args = { n: 10, pods: 20, critest: true };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--quick") a.n = 4;
    else if (argv[i] === "--n") a.n = Number(argv[++i]);
    else if (argv[i] === "--pods") a.pods = Number(argv[++i]);
    else if (argv[i] === "--no-critest") a.critest = false;
  }
  return a;
}

const IMAGE = "docker.io/library/busybox:1.28";

interface Side {
  name: "flotilla" | "containerd";
  socket: string;
  dir: string;
  crictl(args: string[], opts?: Omit<CtrOptions, "namespace">): Promise<CtrResult>;
  /** PSS (KiB) of the stack's processes and shims. */
  pssKiB(): number;
  stop(): Promise<void>;
}

async function ok(s: Side, args: string[]): Promise<string> {
  const r = await s.crictl(args);
  if (r.code !== 0) throw new Error(`${s.name}: crictl ${args.join(" ")}: ${r.stderr}${r.stdout}`);
  return r.stdout.trim();
}

const pssOf = (pids: number[]): number => [...new Set(pids)].map(memKiB).reduce((a, m) => a + m.pss, 0);

function flotillaSide(stack: CriStack): Side {
  return {
    name: "flotilla",
    socket: stack.socket,
    dir: stack.dir,
    crictl: stack.crictl,
    // A warm shim that took a container is in both lists: each PID counted once.
    pssKiB: () => pssOf([...flotillaProcs(stack).flatMap((p) => p.pids), ...shimPidsOf(stack)]),
    stop: () => stack.stop(),
  };
}

async function containerdSide(certs: string): Promise<Side> {
  const net: TestNet = makeTestNet({ portmap: true, portmapSnat: true });
  let t: Target;
  try {
    t = await startContainerd({ cri: criToml(net, { registryConfigPath: certs }) });
  } catch (e) {
    net.cleanup();
    throw e;
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "flt-bench-cri-ctd-"));
  return {
    name: "containerd",
    socket: t.socket,
    dir,
    crictl: crictlOn(t.socket),
    pssKiB: () => pssOf([t.pid(), ...shimPidsOf(t)].filter((p): p is number => !!p)),
    stop: async () => {
      try {
        await t.stop();
      } finally {
        net.cleanup();
        fs.rmSync(dir, { recursive: true, force: true });
      }
    },
  };
}

let seq = 0;
/** A pod (its pause container) and `containers` busybox containers started in it; their ids. */
async function startPod(s: Side, containers: number): Promise<{ pod: string; ctrs: string[] }> {
  const name = `bench-${process.pid}-${++seq}`;
  const podFile = path.join(s.dir, `${name}.json`);
  fs.writeFileSync(podFile, JSON.stringify(podConfig(name)));
  const pod = await ok(s, ["runp", podFile]);
  const ctrs: string[] = [];
  for (let k = 0; k < containers; k++) {
    const cFile = path.join(s.dir, `${name}-c${k}.json`);
    fs.writeFileSync(cFile, JSON.stringify({ metadata: { name: `c${k}` }, image: { image: IMAGE }, command: ["sleep", "3600"], linux: {} }));
    const id = await ok(s, ["create", pod, cFile, podFile]);
    await ok(s, ["start", id]);
    ctrs.push(id);
  }
  return { pod, ctrs };
}

async function teardownPod(s: Side, p: { pod: string; ctrs: string[] }): Promise<void> {
  for (const c of p.ctrs) {
    await ok(s, ["stop", c]);
    await ok(s, ["rm", c]);
  }
  await ok(s, ["stopp", p.pod]);
  await ok(s, ["rmp", p.pod]);
}

/** Every pod crictl lists on the side, stopped and removed (releases netns and CNI IPs). */
async function removeAllPods(s: Side): Promise<void> {
  const r = await s.crictl(["pods", "-q"]);
  for (const id of r.stdout.split("\n").filter(Boolean)) {
    await s.crictl(["stopp", id]);
    await s.crictl(["rmp", id]);
  }
}

const ms = (t: bigint): number => Number(process.hrtime.bigint() - t) / 1e6;
const med = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;

/** Pod start and teardown, the sides alternating (order flipped every round); medians in ms. */
async function lifecycle(sides: Side[], n: number): Promise<Map<string, { start: number; teardown: number }>> {
  const times = new Map(sides.map((s) => [s.name, { start: [] as number[], teardown: [] as number[] }]));
  for (let i = -1; i < n; i++) {
    for (const s of i % 2 === 0 ? sides : [...sides].reverse()) {
      let t = process.hrtime.bigint();
      const p = await startPod(s, 1);
      const st = ms(t);
      t = process.hrtime.bigint();
      await teardownPod(s, p);
      if (i < 0) continue; // one warm-up round per side
      times.get(s.name)!.start.push(st);
      times.get(s.name)!.teardown.push(ms(t));
    }
  }
  return new Map([...times].map(([k, v]) => [k, { start: med(v.start), teardown: med(v.teardown) }]));
}

/** `pods` pods of 3 containers; PSS per container (KiB) after a few idle seconds; then all removed. */
async function footprint(s: Side, pods: number): Promise<number> {
  const made: { pod: string; ctrs: string[] }[] = [];
  try {
    for (let i = 0; i < pods; i++) made.push(await startPod(s, 3));
    await sleep(3000);
    const pss = s.pssKiB();
    console.error(`${s.name}: ${pods} pods x 3 containers, PSS total ${(pss / 1024).toFixed(1)} MiB`);
    return pss / (pods * 3);
  } finally {
    for (const p of made) await teardownPod(s, p).catch((e: unknown) => console.error(String(e)));
  }
}

/** critest --benchmark through the kit's runner; the median (ms) of each measurement its report holds. */
async function critestBench(s: Side, registry: string, n: number): Promise<Map<string, number>> {
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), "flt-bench-critest-"));
  try {
    // Without these counts critest skips its pod, container and image benchmarks (only the start-container one runs).
    const params = path.join(scratch, "params.yaml");
    const outDir = path.join(scratch, "out");
    fs.mkdirSync(outDir);
    const fixture = (k: string): string => `gcr.io/k8s-staging-cri-tools/test-image-${k}`;
    fs.writeFileSync(params, [
      `containersNumber: ${n}`, "containersNumberParallel: 1", `podsNumber: ${n}`, "podsNumberParallel: 1",
      `imagesNumber: ${n}`, "imagesNumberParallel: 1", `imagePullingBenchmarkImage: ${IMAGE}`,
      `imageListingBenchmarkImages: [${["1", "2", "3"].map(fixture).join(", ")}]`,
    ].join("\n") + "\n");
    const r = await runCommand(path.join(CRI_KIT, "run-critest.sh"), [s.socket, "--benchmark", `--benchmarking-params-file=${params}`, `--benchmarking-output-dir=${outDir}`], {
      env: { REGISTRY: registry, SCRATCH: scratch, KEEP_SCRATCH: "1", CRITEST_TIMEOUT: "15m" },
      timeoutMs: 16 * 60_000,
    });
    console.error(`${s.name}: critest --benchmark: ${(r.stdout + r.stderr).trim().split("\n").pop()}`);
    const out = new Map<string, number>();
    // The lifecycle benchmarks (pods, containers, images) write their samples to the output dir, one file each.
    for (const f of fs.readdirSync(outDir).filter((x) => x.endsWith(".json")).sort()) {
      const set = JSON.parse(fs.readFileSync(path.join(outDir, f), "utf8")) as { operationsNames?: string[]; datapoints?: { operationsDurationsNs?: number[] }[] };
      (set.operationsNames ?? []).forEach((op, k) => {
        const ds = (set.datapoints ?? []).map((d) => d.operationsDurationsNs?.[k]).filter((x): x is number => typeof x === "number");
        if (ds.length) out.set(`${f.replace(/\.json$/, "")}: ${op}`, med(ds) / 1e6);
      });
    }
    const reportFile = path.join(scratch, "report.json");
    if (!fs.existsSync(reportFile)) return out;
    type Entry = { Name: string; Value?: { AsJSON?: string } };
    const suites = JSON.parse(fs.readFileSync(reportFile, "utf8")) as { SpecReports?: { ReportEntries?: Entry[] }[] }[];
    for (const e of suites.flatMap((x) => x.SpecReports ?? []).flatMap((x) => x.ReportEntries ?? [])) {
      let exp: { Name?: string; Measurements?: { Name: string; Durations?: number[] | null; Values?: number[] | null; Units?: string }[] };
      try {
        exp = JSON.parse(e.Value?.AsJSON ?? "null") as typeof exp;
      } catch {
        continue;
      }
      for (const m of exp?.Measurements ?? []) {
        // gmeasure durations are nanoseconds.
        if (m.Durations?.length) out.set(`${exp.Name ?? e.Name}: ${m.Name}`, med(m.Durations) / 1e6);
      }
    }
    return out;
  } finally {
    fs.rmSync(scratch, { recursive: true, force: true });
  }
}

export async function run(argv = process.argv.slice(2)): Promise<Row[]> {
  const a = parseArgs(argv);
  const reg = await startRegistry();
  const hostsDir = fs.mkdtempSync(path.join(os.tmpdir(), "flt-bench-cri-hosts-"));
  const sides: Side[] = [];
  try {
    console.error(`cri: fixture images into ${reg.host} (images.sh)`);
    const img = await runCommand(path.join(CRI_KIT, "images.sh"), [reg.host], { timeoutMs: 15 * 60_000 });
    if (img.code !== 0) throw new Error(`images.sh failed: ${img.stderr.slice(-2000)}`);
    const certs = mirrorHosts(hostsDir, reg.host);
    sides.push(flotillaSide(await startCriStack({ registryConfigPath: certs })));
    sides.push(await containerdSide(certs));
    for (const s of sides) {
      await ok(s, ["pull", IMAGE]);
      await ok(s, ["pull", "registry.k8s.io/pause:3.6"]);
    }
    const rows: Row[] = [];
    const row = (benchmark: string, unit: string, f: number, c: number): Row => ({ benchmark, unit, flotilla: f, containerd: c, lowerIsBetter: true });
    const lc = await lifecycle(sides, a.n);
    rows.push(row(`pod start to running container (median of ${a.n})`, "ms", lc.get("flotilla")!.start, lc.get("containerd")!.start));
    rows.push(row(`pod teardown (median of ${a.n})`, "ms", lc.get("flotilla")!.teardown, lc.get("containerd")!.teardown));
    const mem: number[] = [];
    for (const s of sides) mem.push(await footprint(s, a.pods));
    rows.push(row(`PSS per container, ${a.pods} pods x 3 (stack + shims)`, "MiB", mem[0]! / 1024, mem[1]! / 1024));
    if (a.critest) {
      const f = await critestBench(sides[0]!, reg.host, a.n);
      const c = await critestBench(sides[1]!, reg.host, a.n);
      for (const [k, v] of f) if (c.has(k)) rows.push(row(`critest ${k} (median)`, "ms", v, c.get(k)!));
      if (f.size === 0 || c.size === 0) console.error(`cri: critest --benchmark reported ${f.size} / ${c.size} measurements`);
    }
    return rows;
  } finally {
    for (const s of sides.reverse()) {
      await removeAllPods(s).catch(() => undefined);
      await s.stop().catch((e: unknown) => console.error(String(e)));
    }
    await reg.stop();
    fs.rmSync(hostsDir, { recursive: true, force: true });
  }
}

if (require.main === module) {
  run().then(report, (e) => {
    console.error(e);
    process.exit(1);
  });
}
