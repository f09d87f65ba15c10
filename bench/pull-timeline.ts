/**
 * Timeline of Flotilla Transfer pulls of the ~51 MB 5-layer image of bench/transfer (a diagnostic, not a
 * comparison): client wall time and progress events relative to the start of each pull, and, with
 * FLOTILLA_PULL_TRACE=<file> in the environment, the transfer process's own trace lines from that file.
 * Run: npm run build && FLOTILLA_PULL_TRACE=/tmp/x.trace node dist/bench/pull-timeline.js [--runs N]
 */
import * as fs from "node:fs";
import { background } from "../libs/context";
import { TransferClient } from "../libs/clients/transfer";
import { closeChannels } from "../libs/grpc/client";
import { hostPlatform } from "../libs/oci";
import { buildImage, pushImage } from "../test/transfer/images";
import { startRegistry } from "../test/transfer/registry";
import { startStack } from "../test/harness";
import { bigLayer } from "./transfer";

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
    const big = buildImage([0, 1, 2, 3, 4].map((i) => bigLayer(i, 20)));
    const ref = await pushImage(reg.host, "bench/big", "1", big);
    const names = new Map<string, string>();
    big.layers.forEach((l, i) => names.set(l.desc.digest.slice(7, 19), `L${i}`));
    const dl = arg("--downloads");
    const f = await startStack({ logLevel: "warn", extraToml: dl ? `[plugins."io.containerd.transfer.v1.local"]\nmax_concurrent_downloads = ${dl}` : undefined });
    try {
      const client = new TransferClient(f.socket);
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
        const find = (re: RegExp): string => lines.find((l) => re.test(l))?.slice(0, 6).trim() ?? "?";
        const applies = lines.filter((l) => / server apply \d/.test(l)).map((l) => Number(/\+([\d.]+)/.exec(l)![1]));
        console.log(`--- pull ${r + 1}: ${total.toFixed(0)} ms; L0 committed ${find(/committed L0/)}, last layer committed ${lines.filter((l) => /committed L\d/.test(l)).map((l) => l.slice(0, 6).trim()).pop() ?? "?"}, ` +
          `first apply at ${find(/ apply 0/)}, applies ${applies.map((a) => a.toFixed(0)).join("+")} = ${applies.reduce((a, b) => a + b, 0).toFixed(0)} ms`);
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
    closeChannels();
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
