/**
 * `shim start`: pick the shim's socket (sha256 of daemon address, namespace and group id; the group is
 * the bundle's `group` file the tasks process writes, else the `io.containerd.runc.v2.group` or
 * `io.kubernetes.cri.sandbox-id` annotation, else the task id),
 * reuse a live shim on it, or listen on it and start the serving shim in its own session with the
 * listener as fd 3. Prints the bootstrap result (JSON: version 3, address, ttrpc) and writes the
 * address to the bundle's `address` file.
 * Kept light: it loads nothing beyond Node core.
 */
import { spawn } from "node:child_process";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as net from "node:net";
import * as path from "node:path";
import type { ShimFlags } from "./flags";

export const DEFAULT_SOCKET_DIR = "/run/flotilla/s";

function groupOf(bundle: string, id: string): string {
  try {
    // The group the tasks process chose (annotations, labels or the container's sandbox), when it wrote one.
    const chosen = fs.readFileSync(path.join(bundle, "group"), "utf8");
    if (chosen) return chosen;
  } catch {
    /* none: the spec's annotations decide, as in containerd */
  }
  try {
    const spec = JSON.parse(fs.readFileSync(path.join(bundle, "config.json"), "utf8")) as { annotations?: Record<string, string> };
    const a = spec.annotations ?? {};
    return a["io.containerd.runc.v2.group"] || a["io.kubernetes.cri.sandbox-id"] || id;
  } catch {
    return id;
  }
}

export function socketFor(dir: string, address: string, ns: string, group: string): string {
  const hash = crypto.createHash("sha256").update(path.join(address, ns, group)).digest("hex");
  return path.join(dir, hash.slice(0, 32));
}

function connectable(p: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = net.createConnection(p);
    c.once("connect", () => {
      c.destroy();
      resolve(true);
    });
    c.once("error", () => resolve(false));
  });
}

export async function start(flags: ShimFlags, mainScript: string): Promise<void> {
  const bundle = process.cwd();
  const dir = process.env.FLOTILLA_SHIM_SOCKET_DIR || DEFAULT_SOCKET_DIR;
  const sock = socketFor(dir, flags.address, flags.namespace, groupOf(bundle, flags.id));
  const address = `unix://${sock}`;
  const done = (): void => {
    fs.writeFileSync(path.join(bundle, "address"), address);
    // Task API v3 (the v2 service is served too, for daemons that downgrade).
    process.stdout.write(JSON.stringify({ version: 3, address, protocol: "ttrpc" }), () => process.exit(0));
  };
  if (fs.existsSync(sock) && (await connectable(sock))) return done();
  fs.mkdirSync(dir, { recursive: true, mode: 0o711 });
  fs.rmSync(sock, { force: true });
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(sock, () => resolve());
  });
  fs.chmodSync(sock, 0o600);
  const fd = (server as unknown as { _handle: { fd: number } })._handle.fd;
  const args = [...process.execArgv, mainScript, "-namespace", flags.namespace, "-id", flags.id, "-address", flags.address];
  if (flags.debug) args.push("-debug");
  const child = spawn(process.execPath, args, {
    cwd: bundle,
    detached: true,
    stdio: ["ignore", "ignore", "ignore", fd],
    env: { ...process.env, FLOTILLA_SHIM_LISTEN_FD: "3", FLOTILLA_SHIM_SOCKET: sock },
  });
  child.unref();
  // Exit without closing the listener: closing it would unlink the socket the shim now serves.
  done();
}
