/**
 * Timeline of Flotilla Transfer pulls of the ~51 MB 5-layer image of bench/transfer (a diagnostic, not a
 * comparison): client wall time, CPU of the main processes, and the progress events relative to the start
 * of each pull (the last pull's in full, every pull's with --all). When FLOTILLA_PULL_TRACE=<file> is set
 * and the transfer process was built with temporary trace points appending "<epoch ms> <what>" lines to
 * that file, those lines are merged in.
 * --many pulls bench/transfer's 6,000-file image instead.
 * Run: npm run build && node dist/bench/pull-timeline.js [--runs N] [--downloads N] [--all] [--many]
 */
import * as fs from "node:fs";
import { background } from "../libs/context";
import { TransferClient } from "../libs/clients/transfer";
import { hostPlatform } from "../libs/oci";
import { buildImage, pushImage } from "../test/transfer/images";
import { startRegistry } from "../test/transfer/registry";
import { startStack, testChannels } from "../test/harness";
import { bigLayer, manyFilesLayer } from "./transfer";

/** CPU seconds (user + system, or system only) a process has used so far. */
function cpuOf(pid: number | undefined, sysOnly = false): number {
  if (!pid) return 0;
  try {
    const st = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    const rest = st.slice(st.lastIndexOf(")") + 2).split(" ");
    return ((sysOnly ? 0 : Number(rest[11])) + Number(rest[12])) / 100;
  } catch {
    return 0;
  }
}

async function main(runs: number): Promise<void> {
  const reg = await startRegistry();
  const trace = process.env.FLOTILLA_PULL_TRACE;
  try {
    const big = process.argv.includes("--many") ? buildImage([0, 1, 2].map((i) => manyFilesLayer(i, 2000))) : buildImage([0, 1, 2, 3, 4].map((i) => bigLayer(i, 20)));
    const ref = await pushImage(reg.host, "bench/big", "1", big);
    const names = new Map<string, string>();
    big.layers.forEach((l, i) => names.set(l.desc.digest.slice(7, 19), `L${i}`));
    const dl = arg("--downloads");
    const f = await startStack({ logLevel: "warn", extraToml: dl ? `[plugins."io.containerd.transfer.v1.local"]\nmax_concurrent_downloads = ${dl}` : undefined });
    try {
      const client = new TransferClient(testChannels.get(f.socket));
      const totals: number[] = [];
      for (let r = 0; r < runs; r++) {
        if (trace) fs.writeFileSync(trace, "");
        const lines: string[] = [];
        const svcs = ["content", "snapshots", "images", "transfer", "gateway"] as const;
        const cpu0 = svcs.map((x) => cpuOf(f.pidOf(x)));
        const sys0 = svcs.map((x) => cpuOf(f.pidOf(x), true));
        const t0 = performance.timeOrigin + performance.now();
        const at = (): string => (performance.timeOrigin + performance.now() - t0).toFixed(0).padStart(6);
        await client.pull(background("default"), ref, { platforms: [hostPlatform()], unpacks: [{ platform: hostPlatform(), snapshotter: "overlayfs" }] }, {}, {
          progress: (p) => {
            if (p.event === "downloading") return;
            lines.push(`${at()} progress ${p.event} ${names.get((p.desc?.digest ?? "").slice(7, 19)) ?? p.name ?? ""}`);
          },
        });
        const total = performance.timeOrigin + performance.now() - t0;
        if (trace) {
          for (const l of fs.readFileSync(trace, "utf8").split("\n").filter(Boolean)) {
            const [ts, ...rest] = l.split(" ");
            const text = rest.join(" ").replace(/[0-9a-f]{12}/g, (h) => names.get(h) ?? h);
            lines.push(`${(Number(ts) - t0).toFixed(0).padStart(6)} server ${text}`);
          }
        }
        lines.sort((a, b) => Number(a.slice(0, 6)) - Number(b.slice(0, 6)));
        totals.push(total);
        console.log("cpu ms: " + svcs.map((x, k) => `${x} ${((cpuOf(f.pidOf(x)) - cpu0[k]!) * 1000).toFixed(0)} (sys ${((cpuOf(f.pidOf(x), true) - sys0[k]!) * 1000).toFixed(0)})`).join(", "));
        // From the progress events: a layer is in the content store at "complete", unpacked at "extracted".
        const when = (re: RegExp): number | undefined => {
          const l = lines.find((x) => re.test(x));
          return l === undefined ? undefined : Number(l.slice(0, 6));
        };
        const layers = big.layers.map((_, i) => ({ stored: when(new RegExp(`progress complete L${i}$`)), from: when(new RegExp(`progress extracting L${i}$`)), to: when(new RegExp(`progress extracted L${i}$`)) }));
        const unpacks = layers.map((l) => (l.from !== undefined && l.to !== undefined ? `${l.to - l.from}` : "?"));
        console.log(`--- pull ${r + 1}: ${total.toFixed(0)} ms; L0 stored at ${layers[0]!.stored ?? "?"}, last layer stored at ${Math.max(...layers.map((l) => l.stored ?? NaN))}, ` +
          `L0 extracting at ${layers[0]!.from ?? "?"}, per-layer unpack (progress) ${unpacks.join("+")} ms`);
        if (r === runs - 1 || process.argv.includes("--all")) console.log(lines.join("\n"));
        const rm = await f.ctr(["images", "rm", "--sync", ref]);
        if (rm.code !== 0) throw new Error(`images rm: ${rm.stderr}`);
      }
      const sorted = [...totals].sort((a, b) => a - b);
      console.log(`median ${sorted[Math.floor(sorted.length / 2)]!.toFixed(0)} ms of ${runs}`);
    } finally {
      await f.stop();
    }
  } finally {
    testChannels.close();
    await reg.stop();
  }
}

function arg(k: string): number | undefined {
  const i = process.argv.indexOf(k);
  return i > 0 ? Number(process.argv[i + 1]) : undefined;
}

main(arg("--runs") ?? 3).then(() => process.exit(0), (e) => {
  console.error(e);
  process.exit(1);
});
