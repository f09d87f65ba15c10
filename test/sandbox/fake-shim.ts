/**
 * A stand-in sandbox shim for the shim controller tests: speaks the runtime v2 binary protocol
 * (`start` prints a JSON bootstrap result and leaves a detached server; `delete` prints a
 * DeleteResponse) and serves containerd.runtime.sandbox.v1.Sandbox over ttrpc, its "sandbox" being a
 * `sleep` process.
 *
 *   fake-shim -namespace NS -address A -publish-binary B -id ID [-bundle DIR] start|delete
 *   fake-shim serve SOCKET          (the detached server)
 */
import { spawn, type ChildProcess } from "node:child_process";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { decode, encode, toTimestamp } from "#libs/proto";
import { classError, TtrpcServer } from "#libs/ttrpc";
import { typedService } from "#libs/ttrpc/typed";

function flag(args: string[], name: string): string {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] ?? "" : "";
}

function socketFor(ns: string, id: string): string {
  return path.join(os.tmpdir(), `flt-fakeshim-${crypto.createHash("sha256").update(`${ns}/${id}`).digest("hex").slice(0, 16)}.sock`);
}

async function start(args: string[]): Promise<void> {
  const ns = flag(args, "-namespace");
  const id = flag(args, "-id");
  // The bootstrap params arrive on stdin; check they decode and name this shim.
  const stdin = fs.readFileSync(0);
  const params = decode<{ instance_id: string; namespace: string }>("containerd.runtime.bootstrap.v1.BootstrapParams", stdin);
  if (params.instance_id !== id || params.namespace !== ns) throw new Error(`bootstrap params for ${params.namespace}/${params.instance_id}, flags say ${ns}/${id}`);
  const sock = socketFor(ns, id);
  fs.writeFileSync("shim.pid", "");
  const child = spawn(process.execPath, [__filename, "serve", sock], { detached: true, stdio: "ignore", cwd: process.cwd() });
  fs.writeFileSync("shim.pid", String(child.pid));
  child.unref();
  for (let i = 0; i < 200 && !fs.existsSync(sock); i++) await new Promise((r) => setTimeout(r, 25));
  process.stdout.write(JSON.stringify({ version: 3, address: `unix://${sock}`, protocol: "ttrpc" }));
}

function del(args: string[]): void {
  const bundle = flag(args, "-bundle") || process.cwd();
  try {
    const pid = Number(fs.readFileSync(path.join(bundle, "shim.pid"), "utf8"));
    if (pid) process.kill(pid, "SIGKILL");
  } catch {
    /* gone */
  }
  fs.rmSync(socketFor(flag(args, "-namespace"), flag(args, "-id")), { force: true });
  process.stdout.write(encode("containerd.runtime.task.v2.DeleteResponse", { pid: 0, exit_status: 137, exited_at: toTimestamp() }));
}

function serve(sock: string): void {
  let proc: ChildProcess | undefined;
  let exit: { status: number; at: Date } | undefined;
  const exitWaiters: (() => void)[] = [];
  let created = false;
  const createdAt = new Date();
  const server = new TtrpcServer();
  const handlers = typedService("containerd.runtime.sandbox.v1.Sandbox", {
    CreateSandbox: async (_ctx, req) => {
      if (created) throw classError("already exists", `sandbox ${req.sandbox_id}`);
      if (!fs.existsSync(String(req.bundle_path))) throw classError("invalid argument", "bundle missing");
      created = true;
      return {};
    },
    StartSandbox: async () => {
      if (!created) throw classError("failed precondition", "sandbox not created");
      proc = spawn("sleep", ["1000"], { stdio: "ignore" });
      proc.on("exit", (code, signal) => {
        exit = { status: code ?? 128 + (signal ? os.constants.signals[signal] : 0), at: new Date() };
        for (const w of exitWaiters.splice(0)) w();
      });
      return { pid: proc.pid, created_at: toTimestamp(createdAt) };
    },
    Platform: async () => ({ platform: { os: "linux", architecture: "fake64" } }),
    StopSandbox: async () => {
      if (proc && !exit) {
        proc.kill("SIGKILL");
        await new Promise<void>((r) => exitWaiters.push(r));
      }
      return {};
    },
    WaitSandbox: async () => {
      if (!exit) await new Promise<void>((r) => exitWaiters.push(r));
      return { exit_status: exit!.status, exited_at: toTimestamp(exit!.at) };
    },
    SandboxStatus: async (_ctx, req) => ({
      sandbox_id: req.sandbox_id,
      pid: proc && !exit ? proc.pid : 0,
      state: proc && !exit ? "SANDBOX_READY" : "SANDBOX_NOTREADY",
      info: { fake: "yes", verbose: String(req.verbose) },
      created_at: toTimestamp(createdAt),
      ...(exit ? { exited_at: toTimestamp(exit.at) } : {}),
    }),
    PingSandbox: async () => ({}),
    ShutdownSandbox: async () => {
      proc?.kill("SIGKILL");
      setTimeout(() => {
        fs.rmSync(sock, { force: true });
        process.exit(0);
      }, 50);
      return {};
    },
    SandboxMetrics: async (_ctx, req) => ({ metrics: { timestamp: toTimestamp(), id: req.sandbox_id, data: { type_url: "fake.Metrics", value: Buffer.from("m") } } }),
  });
  server.register("containerd.runtime.sandbox.v1.Sandbox", handlers);
  void server.listen(sock);
}

const args = process.argv.slice(2);
const cmd = args.at(-1);
if (args[0] === "serve") serve(args[1]!);
else if (cmd === "start") void start(args).catch((e: unknown) => {
  process.stderr.write(String((e as Error).message));
  process.exit(1);
});
else if (cmd === "delete") del(args);
else {
  process.stderr.write(`fake-shim: unknown command ${cmd}\n`);
  process.exit(1);
}
