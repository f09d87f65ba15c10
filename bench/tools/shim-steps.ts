/**
 * Focused shim timing (issue 6): a warm Flotilla shim driven directly over ttrpc through
 * Create/Start/Wait/Delete/Shutdown of `true` in a busybox bundle (bind-mounted rootfs), per step,
 * next to the bare runc create/start/delete times. `node dist/bench/tools/shim-steps.js [N]`.
 */
import { spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { TtrpcClient, NAMESPACE_KEY } from "#libs/ttrpc";
import { TypedClient } from "#libs/ttrpc/typed";
import { mkfifo } from "#libs/sys/linux";
import { busyboxRootfs } from "#test/tasks/helpers";
import { repoRoot } from "#libs/proto";

const med = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

function bundleAt(dir: string, rootfs: string): string {
  fs.mkdirSync(path.join(dir, "rootfs"), { recursive: true });
  const spec = JSON.parse(spawnSync("runc", ["spec", "--bundle", dir]).status === 0 ? fs.readFileSync(path.join(dir, "config.json"), "utf8") : "{}");
  spec.process.terminal = false;
  spec.process.args = ["true"];
  spec.root = { path: "rootfs", readonly: false };
  fs.writeFileSync(path.join(dir, "config.json"), JSON.stringify(spec));
  mkfifo(path.join(dir, "log"), 0o700);
  void rootfs;
  return dir;
}

async function main(): Promise<void> {
  const n = Number(process.argv[2] ?? 10);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "flt-shim-steps-"));
  const rootfs = busyboxRootfs(path.join(dir, "busybox"));
  const runcRoot = path.join(dir, "runc");
  const steps: Record<string, number[]> = {};
  const rec = (k: string, v: number): void => void (steps[k] ??= []).push(v);
  for (let i = 0; i < n + 1; i++) {
    const sock = path.join(dir, `s${i}`);
    const child = spawn(process.execPath, ["--max-semi-space-size=1", "--max-old-space-size=64", path.join(repoRoot(), "dist/services/shim/main.js"), "-warm", "-socket", sock, "-address", "/nonexistent"], {
      stdio: "ignore",
      env: { ...process.env, FLOTILLA_RUNC_ROOT: runcRoot, TTRPC_ADDRESS: path.join(dir, "no-events") },
    });
    const client = await TtrpcClient.connect(`unix://${sock}`, { retryMs: 30_000 });
    await new Promise((r) => setTimeout(r, 300));
    const task = new TypedClient(client, "containerd.task.v3.Task");
    const md = { metadata: { [NAMESPACE_KEY]: ["bench"] } };
    const b = bundleAt(path.join(dir, `b${i}`), rootfs);
    const id = `c${i}`;
    if (process.env.SHIMLOG) {
      const fd = fs.openSync(path.join(b, "log"), fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
      const sk = new (require("node:net").Socket)({ fd, readable: true, writable: false });
      sk.on("data", (x: Buffer) => process.stdout.write(x));
      sk.unref();
    }
    let t = performance.now();
    const lap = (k: string): void => {
      const x = performance.now();
      if (i > 0) rec(k, x - t);
      t = x;
    };
    await task.call("Create", { id, bundle: b, rootfs: [{ type: "bind", source: rootfs, options: ["rbind", "rw"] }], stdin: "", stdout: "", stderr: "", terminal: false }, md);
    lap("Create");
    const waited = task.call("Wait", { id }, md);
    await task.call("Start", { id }, md);
    lap("Start");
    await waited;
    lap("Wait (after Start)");
    await task.call("Delete", { id }, md);
    lap("Delete");
    await task.call("Shutdown", { id }, md).catch(() => undefined);
    lap("Shutdown");
    client.close();
    await new Promise((r) => child.once("exit", r));
    // bare runc on the same bundle
    fs.mkdirSync(path.join(b, "rootfs"), { recursive: true });
    spawnSync("mount", ["--rbind", rootfs, path.join(b, "rootfs")]);
    t = performance.now();
    spawnSync("runc", ["--root", runcRoot, "create", "--bundle", b, `r${i}`], { stdio: "ignore" });
    lap("runc create (spawnSync)");
    spawnSync("runc", ["--root", runcRoot, "start", `r${i}`], { stdio: "ignore" });
    lap("runc start");
    await new Promise((r) => setTimeout(r, 50));
    t = performance.now();
    spawnSync("runc", ["--root", runcRoot, "delete", `r${i}`], { stdio: "ignore" });
    lap("runc delete");
    spawnSync("umount", [path.join(b, "rootfs")]);
  }
  for (const [k, v] of Object.entries(steps)) console.log(`${k.padEnd(26)} median ${med(v).toFixed(1).padStart(6)} ms  [${v.map((x) => x.toFixed(0)).join(",")}]`);
  fs.rmSync(dir, { recursive: true, force: true });
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
