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
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { decode, encode, toTimestamp } from "../../libs/proto";
import { Deframer, frame, TYPE_REQUEST, TYPE_RESPONSE } from "../../services/sandbox/src/local/shim/ttrpc";

const P = "containerd.runtime.sandbox.v1.";

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
  type Handler = (req: Record<string, unknown>) => Promise<Record<string, unknown>> | Record<string, unknown>;
  const fail = (code: number, message: string): never => {
    throw Object.assign(new Error(message), { ttrpcCode: code });
  };
  const handlers: Record<string, [string, string, Handler]> = {
    CreateSandbox: ["CreateSandboxRequest", "CreateSandboxResponse", (req) => {
      if (created) fail(6, `sandbox ${req.sandbox_id}: already exists`);
      if (!fs.existsSync(String(req.bundle_path))) fail(3, "bundle missing");
      created = true;
      return {};
    }],
    StartSandbox: ["StartSandboxRequest", "StartSandboxResponse", () => {
      if (!created) fail(9, "sandbox not created: failed precondition");
      proc = spawn("sleep", ["1000"], { stdio: "ignore" });
      proc.on("exit", (code, signal) => {
        exit = { status: code ?? 128 + (signal ? os.constants.signals[signal] : 0), at: new Date() };
        for (const w of exitWaiters.splice(0)) w();
      });
      return { pid: proc.pid, created_at: toTimestamp(createdAt) };
    }],
    Platform: ["PlatformRequest", "PlatformResponse", () => ({ platform: { os: "linux", architecture: "fake64" } })],
    StopSandbox: ["StopSandboxRequest", "StopSandboxResponse", async () => {
      if (proc && !exit) {
        proc.kill("SIGKILL");
        await new Promise<void>((r) => exitWaiters.push(r));
      }
      return {};
    }],
    WaitSandbox: ["WaitSandboxRequest", "WaitSandboxResponse", async () => {
      if (!exit) await new Promise<void>((r) => exitWaiters.push(r));
      return { exit_status: exit!.status, exited_at: toTimestamp(exit!.at) };
    }],
    SandboxStatus: ["SandboxStatusRequest", "SandboxStatusResponse", (req) => ({
      sandbox_id: req.sandbox_id,
      pid: proc && !exit ? proc.pid : 0,
      state: proc && !exit ? "SANDBOX_READY" : "SANDBOX_NOTREADY",
      info: { fake: "yes", verbose: String(req.verbose) },
      created_at: toTimestamp(createdAt),
      ...(exit ? { exited_at: toTimestamp(exit.at) } : {}),
    })],
    PingSandbox: ["PingRequest", "PingResponse", () => ({})],
    ShutdownSandbox: ["ShutdownSandboxRequest", "ShutdownSandboxResponse", () => {
      proc?.kill("SIGKILL");
      setTimeout(() => {
        fs.rmSync(sock, { force: true });
        process.exit(0);
      }, 50);
      return {};
    }],
    SandboxMetrics: ["SandboxMetricsRequest", "SandboxMetricsResponse", (req) => ({ metrics: { timestamp: toTimestamp(), id: req.sandbox_id, data: { type_url: "fake.Metrics", value: Buffer.from("m") } } })],
  };
  fs.rmSync(sock, { force: true });
  const server = net.createServer((conn) => {
    const d = new Deframer();
    conn.on("error", () => undefined);
    conn.on("data", (chunk: Buffer) => {
      for (const f of d.push(chunk)) {
        if (f.type !== TYPE_REQUEST) continue;
        const req = decode<{ service: string; method: string; payload: Buffer }>("ttrpc.Request", f.data);
        const reply = (m: Record<string, unknown>): void => {
          if (!conn.destroyed) conn.write(frame(f.streamId, TYPE_RESPONSE, encode("ttrpc.Response", m)));
        };
        const h = req.service === "containerd.runtime.sandbox.v1.Sandbox" ? handlers[req.method] : undefined;
        if (!h) {
          reply({ status: { code: 12, message: req.service === "containerd.runtime.sandbox.v1.Sandbox" ? `method ${req.method}` : `service ${req.service}` } });
          continue;
        }
        void (async () => {
          try {
            const res = await h[2](decode(P + h[0], req.payload));
            reply({ payload: encode(P + h[1], res) });
          } catch (e) {
            reply({ status: { code: (e as { ttrpcCode?: number }).ttrpcCode ?? 2, message: (e as Error).message } });
          }
        })();
      }
    });
  });
  server.listen(sock);
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
