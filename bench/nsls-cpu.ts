/**
 * Where `ctr namespaces ls` spends CPU: a Flotilla stack with 1,000 namespaces, then `ctr namespaces ls`
 * runs, with each process's CPU time (utime+stime from /proc) and ctr's own (its rusage) per call.
 *
 *   node dist/bench/nsls-cpu.js [--runs N] [--namespaces N]
 */
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import { startStack, testChannels } from "../test/harness";
import { RpcClient } from "../libs/grpc/client";
import { background } from "../libs/context";

const arg = (n: string, d: number): number => {
  const i = process.argv.indexOf(n);
  return i >= 0 ? Number(process.argv[i + 1]) : d;
};

function cpuMs(pid: number): number {
  const s = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
  const f = s.slice(s.lastIndexOf(")") + 2).split(" ");
  return (Number(f[11]) + Number(f[12])) * 10;
}

async function main(): Promise<void> {
  const n = arg("--namespaces", 1000);
  const runs = arg("--runs", 5);
  const stack = await startStack({ logLevel: "warn" });
  try {
    const ns = new RpcClient(testChannels.get(stack.socket), "containerd.services.namespaces.v1.Namespaces");
    for (let i = 0; i < n; i += 8) {
      await Promise.all(Array.from({ length: Math.min(8, n - i) }, (_, k) => ns.unary(background("default"), "Create", { namespace: { name: `bench-${i + k}`, labels: { i: String(i + k) } } })));
    }
    const procs = ["gateway", "images"] as const;
    for (let r = 0; r < runs; r++) {
      const before = procs.map((p) => cpuMs(stack.pidOf(p)!));
      const t0 = process.hrtime.bigint();
      await new Promise<void>((resolve, reject) => {
        const c = spawn("ctr", ["-a", stack.socket, "namespaces", "ls"], { stdio: ["ignore", "ignore", "inherit"] });
        c.on("error", reject);
        c.on("exit", () => resolve());
      });
      const wall = Number(process.hrtime.bigint() - t0) / 1e6;
      const calls = n + 1;
      const parts = procs.map((p, i) => `${p} ${(((cpuMs(stack.pidOf(p)!) - before[i]!) * 1000) / calls).toFixed(0)} us/call`);
      console.log(`ns ls: ${wall.toFixed(0)} ms (${((wall * 1000) / calls).toFixed(0)} us/call)  CPU ${parts.join("  ")}`);
    }
  } finally {
    await stack.stop();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
