/**
 * A TCP connection to a port inside a pod's network namespace. Node cannot enter a namespace, so a
 * small relay (./relay.ts) runs there under `nsenter --net=PATH` and this side talks to its stdio; a
 * host-network pod is dialled directly. Either way the result is a Duplex to the pod's port.
 */
import { spawn } from "node:child_process";
import * as net from "node:net";
import * as path from "node:path";
import { Duplex } from "node:stream";
import { repoRoot } from "#libs/proto";

/** The relay script, found from the package root (this module may run from a bundle elsewhere). */
const RELAY = path.join(repoRoot(), "dist", "services", "cri", "src", "streaming", "relay.js");

/** Connect to 127.0.0.1:`port` in the namespace at `netnsPath` ("" = the host's). */
export function dialPod(netnsPath: string, port: number): Promise<Duplex> {
  if (!netnsPath) {
    return new Promise((resolve, reject) => {
      const s = net.connect({ host: "127.0.0.1", port, family: 4 });
      s.once("connect", () => resolve(s.on("error", () => undefined)));
      s.once("error", (e: NodeJS.ErrnoException) => reject(new Error(`failed to dial ${port}: dial tcp4 127.0.0.1:${port}: ${e.code === "ECONNREFUSED" ? "connect: connection refused" : e.message}`)));
    });
  }
  return new Promise((resolve, reject) => {
    const child = spawn("nsenter", [`--net=${netnsPath}`, "--", process.execPath, RELAY, String(port)], { stdio: ["pipe", "pipe", "pipe"] });
    let err = "";
    let settled = false;
    const fail = (why: string): void => {
      if (settled) return;
      settled = true;
      reject(new Error(`failed to execute portforward in network namespace "${netnsPath}": failed to dial ${port}: ${why}`));
    };
    child.once("error", (e) => fail(e.message));
    child.stderr.on("data", (b: Buffer) => {
      err += b.toString();
      if (!settled && err.includes("connected\n")) {
        settled = true;
        const d = Duplex.from({ readable: child.stdout, writable: child.stdin });
        d.on("error", () => undefined); // a destroy before both ends finished; the relay goes with it
        d.on("close", () => {
          if (child.exitCode === null) child.kill();
        });
        resolve(d);
      }
    });
    child.once("exit", (code) => {
      if (code !== 0) fail(err.trim() || `relay exited with status ${code}`);
    });
  });
}

/** Pipe `a` and `b` into each other (half-closes passed on); resolves when both directions are done. */
export function splice(a: Duplex, b: Duplex): Promise<void> {
  const one = (from: Duplex, to: Duplex): Promise<void> =>
    new Promise((res) => {
      from.pipe(to);
      from.once("end", () => res());
      from.once("close", () => res());
      from.once("error", () => res());
      to.once("error", () => res());
    });
  return Promise.all([one(a, b), one(b, a)]).then(() => undefined);
}
