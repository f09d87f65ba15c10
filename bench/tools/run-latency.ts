/**
 * Focused issue-6 measurement: `ctr run --rm` latency only (image, and --rootfs), Flotilla and
 * containerd interleaved. `node dist/bench/tools/run-latency.js [N]`.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { startContainerd, startFlotilla, type Target } from "../lib";
import { startRegistry } from "#test/helpers/registry";
import { buildBusyboxImage, pushImage } from "#test/helpers/image";
import { busyboxRootfs } from "#test/tasks/helpers";

const med = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function main(): Promise<void> {
  const n = Number(process.argv[2] ?? 15);
  const only = process.argv[3];
  const reg = await startRegistry();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "flt-bench-run-"));
  const rootfs = busyboxRootfs(path.join(dir, "rootfs"));
  const f = await startFlotilla();
  const targets: Target[] = only === "f" ? [f] : [f, await startContainerd()];
  const ns = "bench";
  try {
    await pushImage(reg, "bench/busybox", "latest", buildBusyboxImage());
    const ref = `${reg.host}/bench/busybox:latest`;
    for (const t of targets) {
      const r = await t.ctr(["images", "pull", "--plain-http", ref], { namespace: ns });
      if (r.code) throw new Error(r.stderr);
    }
    for (const [name, args] of [["image", (i: number) => ["run", "--rm", ref, `ri${i}`, "true"]], ["rootfs", (i: number) => ["run", "--rm", "--env", "PATH=/bin", "--rootfs", rootfs, `rr${i}`, "true"]]] as const) {
      const times = targets.map(() => [] as number[]);
      for (let i = 0; i < n + 2; i++) {
        for (let k = 0; k < targets.length; k++) {
          const t0 = performance.now();
          const r = await targets[k]!.ctr(args(i), { namespace: ns });
          if (r.code) throw new Error(`${targets[k]!.name}: ${r.stderr}`);
          if (i >= 2) times[k]!.push(performance.now() - t0);
        }
      }
      const m = times.map(med);
      console.log(`${name}: ${targets.map((t, k) => `${t.name} ${m[k]!.toFixed(1)} ms [${times[k]!.map((x) => x.toFixed(0)).join(",")}]`).join("  ")}${m[1] ? `  ratio ${(m[0]! / m[1]).toFixed(2)}` : ""}`);
    }
    if (process.env.KEEP) {
      console.log("flotilla dir", (f as unknown as { stack: { dir: string } }).stack.dir);
      await new Promise((r) => setTimeout(r, Number(process.env.KEEP) * 1000));
    }
  } finally {
    for (const t of targets) await t.stop();
    await reg.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
