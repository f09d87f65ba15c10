/**
 * Starting and deleting a sandbox's shim with the runtime v2 binary protocol (REFERENCE part 2 B):
 * binary name from the runtime name, `start` in the bundle (BootstrapParams on stdin, the address on
 * stdout as BootstrapResult, JSON or plain text), `delete` when the shim is gone or being removed.
 */
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { errFailedPrecondition, errInvalidArgument, errNotFound, errNotImplemented } from "#libs/errdefs";
import { decode, encode, type AnyMsg } from "#libs/proto";

export interface ShimEndpoint {
  address: string;
  protocol: string;
  version: number;
}

/** containerd's BinaryName: `io.containerd.runc.v2` -> `containerd-shim-runc-v2`; absolute paths as is. */
export function shimBinaryName(runtime: string): string {
  if (path.isAbsolute(runtime)) return runtime;
  if (runtime.includes("/")) throw errInvalidArgument(`invalid runtime name ${JSON.stringify(runtime)}: a path must be absolute`);
  const parts = runtime.split(".");
  if (parts.length < 2) throw errInvalidArgument(`invalid runtime name ${JSON.stringify(runtime)}, correct runtime name should be either format like \`io.containerd.runc.v2\` or a full path to the binary`);
  return `containerd-shim-${parts[parts.length - 2]}-${parts[parts.length - 1]}`;
}

/** The shim executable: an absolute runtime path, else the binary name in `dirs` then $PATH. */
export function resolveShim(runtime: string, dirs: readonly string[]): string {
  const name = shimBinaryName(runtime);
  if (path.isAbsolute(name)) {
    if (!fs.existsSync(name)) throw errNotFound(`runtime ${JSON.stringify(runtime)} binary not installed`);
    return name;
  }
  for (const d of [...dirs, ...(process.env.PATH ?? "").split(":").filter(Boolean)]) {
    const p = path.join(d, name);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch {
      /* next */
    }
  }
  throw errNotFound(`runtime ${JSON.stringify(runtime)} binary not installed ${JSON.stringify(name)}`);
}

/** Parse a shim's `start` output (protobuf BootstrapResult, JSON, or the bare address). */
export function parseStartOutput(out: Buffer): ShimEndpoint {
  const text = out.toString("utf8").trim();
  let ep: ShimEndpoint | undefined;
  if (text.startsWith("{")) {
    const j = JSON.parse(text) as { version?: number; address?: string; protocol?: string };
    ep = { address: String(j.address ?? ""), protocol: j.protocol || "ttrpc", version: Number(j.version ?? 2) };
  } else if (/^[a-z+]+:\/\/\S+$|^\/\S+$/.test(text)) {
    ep = { address: text, protocol: "ttrpc", version: 2 };
  } else {
    const r = decode<{ version: number; address: string; protocol: string }>("containerd.runtime.bootstrap.v1.BootstrapResult", out);
    ep = { address: r.address, protocol: r.protocol || "ttrpc", version: r.version || 2 };
  }
  if (!ep.address) throw errFailedPrecondition(`shim start returned no address: ${JSON.stringify(text.slice(0, 200))}`);
  if (ep.version > 3) throw errNotImplemented(`unsupported shim version ${ep.version}`);
  return ep;
}

export interface LaunchOptions {
  binary: string;
  id: string;
  namespace: string;
  bundle: string;
  /** The daemon's gRPC address (the gateway) and the ttrpc address shims publish events to. */
  grpcAddress: string;
  ttrpcAddress: string;
  /** Runtime options, passed as a BootstrapParams extension. */
  options?: AnyMsg;
  debug?: boolean;
  timeoutMs?: number;
  /** More environment for the shim (Flotilla's shim takes its runc root and socket directory from it). */
  env?: Record<string, string>;
}

function run(binary: string, args: string[], cwd: string, env: NodeJS.ProcessEnv, stdin: Buffer, timeoutMs: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const child = spawn(binary, args, { cwd, env, stdio: ["pipe", "pipe", "pipe"], detached: true });
    const out: Buffer[] = [];
    child.stdout.on("data", (b: Buffer) => out.push(b));
    child.stderr.on("data", (b: Buffer) => out.push(b));
    const t = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("error", (e) => {
      clearTimeout(t);
      reject(errFailedPrecondition(`${path.basename(binary)} ${args.at(-1)}: ${e.message}`));
    });
    child.on("close", (code, signal) => {
      clearTimeout(t);
      const b = Buffer.concat(out);
      if (code === 0) return resolve(b);
      reject(errFailedPrecondition(`${path.basename(binary)} ${args.at(-1)} failed (${signal ?? `exit status ${code}`}): ${b.toString().trim().slice(0, 500)}`));
    });
    child.stdin.on("error", () => undefined);
    child.stdin.end(stdin);
  });
}

function shimEnv(o: LaunchOptions): NodeJS.ProcessEnv {
  return { ...process.env, ...o.env, GOMAXPROCS: "2", TTRPC_ADDRESS: o.ttrpcAddress, GRPC_ADDRESS: o.grpcAddress, NAMESPACE: o.namespace, MAX_SHIM_VERSION: "3" };
}

function baseArgs(o: LaunchOptions): string[] {
  return ["-namespace", o.namespace, "-address", o.grpcAddress, "-publish-binary", process.execPath, "-id", o.id, ...(o.debug ? ["-debug"] : [])];
}

/** `<shim> ... start` in the bundle; resolves with the shim's endpoint. */
export async function startShim(o: LaunchOptions): Promise<ShimEndpoint> {
  const params = encode("containerd.runtime.bootstrap.v1.BootstrapParams", {
    instance_id: o.id,
    namespace: o.namespace,
    log_level: o.debug ? -4 : 0,
    containerd_version: "flotilla",
    containerd_ttrpc_address: o.ttrpcAddress,
    containerd_grpc_address: o.grpcAddress,
    containerd_binary: process.execPath,
    extensions: o.options ? [{ value: o.options }] : [],
  });
  return parseStartOutput(await run(o.binary, [...baseArgs(o), "start"], o.bundle, shimEnv(o), params, o.timeoutMs ?? 30000));
}

/** `<shim> ... -bundle B delete`: the shim cleans up after a dead or removed sandbox. */
export async function deleteShim(o: LaunchOptions): Promise<{ pid: number; exitStatus: number }> {
  const out = await run(o.binary, [...baseArgs(o), "-bundle", o.bundle, "delete"], o.bundle, shimEnv(o), Buffer.alloc(0), o.timeoutMs ?? 30000);
  try {
    const r = decode<{ pid: number; exit_status: number }>("containerd.runtime.task.v2.DeleteResponse", out);
    return { pid: r.pid, exitStatus: r.exit_status };
  } catch {
    return { pid: 0, exitStatus: 0 };
  }
}
