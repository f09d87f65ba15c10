/**
 * The shim binary's subcommands (runtime v2, ../shared/REFERENCE.md part 2 B.3): `start` prints how to
 * reach the serving shim (protobuf BootstrapResult, JSON, or a bare address), `delete` cleans up after
 * a dead shim and prints a protobuf DeleteResponse. Both run with the bundle as working directory in
 * their own process group, with containerd's environment.
 */
import { spawn } from "node:child_process";
import { errDeadlineExceeded, errNotImplemented, ErrorCodes, FlotillaError } from "#libs/errdefs";
import { decode, encode } from "#libs/proto";
import type { TypedValue } from "#libs/core/containers";
import type { ShimCommand } from "./runtimes";
import { fromTimestamp, now } from "#libs/time";

export interface ShimEnv {
  namespace: string;
  id: string;
  /** The daemon's gRPC address (the gateway socket). */
  address: string;
  ttrpcAddress: string;
  publishBinary: string;
  debug: boolean;
}

export interface BootstrapResult {
  version: number;
  address: string;
  protocol: string;
}

const errUnknown = (msg: string): FlotillaError => new FlotillaError(ErrorCodes.Unknown, msg);

interface Output {
  code: number;
  stdout: Buffer;
  stderr: string;
}

function run(cmd: ShimCommand, args: string[], cwd: string, env: ShimEnv, stdin: Buffer, timeoutMs: number): Promise<Output> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd.argv[0]!, [...cmd.argv.slice(1), ...args], {
      cwd,
      detached: true,
      stdio: ["pipe", "pipe", "pipe"],
      env: {
        ...process.env,
        ...cmd.env,
        TTRPC_ADDRESS: env.ttrpcAddress,
        GRPC_ADDRESS: env.address,
        NAMESPACE: env.namespace,
        MAX_SHIM_VERSION: "3",
        GOMAXPROCS: process.env.GOMAXPROCS ?? "2",
      },
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on("data", (b: Buffer) => out.push(b));
    child.stderr.on("data", (b: Buffer) => err.push(b));
    child.stdin.on("error", () => undefined);
    child.stdin.end(stdin);
    const t = setTimeout(() => {
      try {
        process.kill(-child.pid!, "SIGKILL");
      } catch {
        child.kill("SIGKILL");
      }
      reject(errDeadlineExceeded(`shim ${args[args.length - 1]} timed out after ${timeoutMs} ms`));
    }, timeoutMs);
    child.on("error", (e) => {
      clearTimeout(t);
      reject(errUnknown(`shim: ${e.message}`));
    });
    child.on("close", (code, signal) => {
      clearTimeout(t);
      resolve({ code: code ?? (signal ? 128 : 1), stdout: Buffer.concat(out), stderr: Buffer.concat(err).toString() });
    });
  });
}

function flags(env: ShimEnv): string[] {
  const a = ["-namespace", env.namespace, "-address", env.address, "-publish-binary", env.publishBinary, "-id", env.id];
  if (env.debug) a.push("-debug");
  return a;
}

/** containerd's parseStartResponse: protobuf BootstrapResult, JSON, or the trimmed text as a v2 ttrpc address. */
export function parseStartResponse(out: Buffer): BootstrapResult {
  const text = out.toString().trim();
  if (text.startsWith("{")) {
    try {
      const j = JSON.parse(text) as Partial<BootstrapResult>;
      if (j.address) return check({ version: Number(j.version ?? 2), address: j.address, protocol: j.protocol || "ttrpc" });
    } catch {
      /* not JSON after all */
    }
  }
  if (/^(unix|vsock|hvsock|ttrpc\+unix|grpc\+unix):\/\//.test(text) || text.startsWith("/") || /^[\x20-\x7e]+$/.test(text)) {
    if (text.length && !text.includes("\n") && !text.includes(" ")) return { version: 2, address: text, protocol: "ttrpc" };
  }
  try {
    const r = decode<{ version: number; address: string; protocol: string }>("containerd.runtime.bootstrap.v1.BootstrapResult", out);
    if (r.address) return check({ version: r.version || 2, address: r.address, protocol: r.protocol || "ttrpc" });
  } catch {
    /* not protobuf */
  }
  throw errUnknown(`unexpected shim start output: ${JSON.stringify(text.slice(0, 200))}`);
}

function check(b: BootstrapResult): BootstrapResult {
  if (b.version > 3) throw errNotImplemented(`unsupported shim version (${b.version})`);
  if (b.protocol !== "ttrpc") throw errNotImplemented(`unsupported shim protocol ${JSON.stringify(b.protocol)}`);
  return b;
}

/** `shim start`: the shim's stdin is the runtime options as a protobuf Any (or nothing). */
export async function shimStart(cmd: ShimCommand, bundle: string, env: ShimEnv, options: TypedValue | undefined, timeoutMs = 30_000): Promise<BootstrapResult> {
  const stdin = options ? encode("google.protobuf.Any", { type_url: options.typeUrl, value: Buffer.from(options.value) }) : Buffer.alloc(0);
  const r = await run(cmd, [...flags(env), "start"], bundle, env, stdin, timeoutMs);
  if (r.code !== 0) throw errUnknown(`${(r.stderr + r.stdout.toString()).trim() || `exit status ${r.code}`}`);
  return parseStartResponse(r.stdout);
}

export interface DeleteResult {
  pid: number;
  exitStatus: number;
  exitedAt: Date;
}

/** `shim delete`: clean up a dead shim's container; its DeleteResponse. */
export async function shimDelete(cmd: ShimCommand, bundle: string, env: ShimEnv, timeoutMs = 5_000): Promise<DeleteResult> {
  const r = await run(cmd, [...flags(env), "-bundle", bundle, "delete"], bundle, env, Buffer.alloc(0), timeoutMs);
  if (r.code !== 0) throw errUnknown(`shim delete: ${(r.stderr + r.stdout.toString()).trim() || `exit status ${r.code}`}`);
  const d = decode<{ pid: number; exit_status: number; exited_at?: { seconds: number; nanos: number } }>("containerd.task.v2.DeleteResponse", r.stdout);
  const at = fromTimestamp(d.exited_at) ?? now();
  return { pid: d.pid, exitStatus: d.exit_status, exitedAt: at };
}
