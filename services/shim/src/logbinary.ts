/**
 * `binary://` stdio (containerd's shim logging contract, runtime/v2/logging): the shim starts the
 * binary named by the URI's path, its arguments the query's keys each followed by its first value,
 * with exactly two environment variables (CONTAINER_ID, CONTAINER_NAMESPACE), the read ends of the
 * container's stdout and stderr pipes as fds 3 and 4, and the write end of a ready pipe as fd 5. The
 * container is created only once the binary wrote to or closed fd 5. With a terminal, the console copy
 * writes the pty's output to fd 3's pipe and closes fd 4's at once (./console.ts). At the process's
 * delete the binary gets SIGTERM, and SIGKILL if it has not exited 12 seconds later.
 */
import { spawn, type ChildProcess } from "node:child_process";
import * as net from "node:net";
import { pipe } from "#libs/sys/linux";
import { classError } from "#libs/ttrpc/errors";
import type { Reaper } from "./reaper";
import { closeQuietly } from "./stdio";

const TERM_GRACE_MS = 12_000;

export class LoggingBinary {
  private constructor(
    /**
     * Write ends for the container's fds 1 and 2 (the shim closes them once the runtime has them), or
     * with a terminal, the console copy's output (stdout) and nothing (stderr).
     */
    readonly stdout: number,
    readonly stderr: number,
    private readonly child: ChildProcess,
  ) {}

  static async start(uri: URL, id: string, namespace: string, reaper?: Reaper): Promise<LoggingBinary> {
    const args: string[] = [];
    for (const k of new Set(uri.searchParams.keys())) args.push(k, uri.searchParams.get(k) ?? "");
    const file = decodeURIComponent(uri.pathname);
    const opened: number[] = [];
    try {
      const [outR, outW] = pipe();
      opened.push(outR, outW);
      const [errR, errW] = pipe();
      opened.push(errR, errW);
      const [readyR, readyW] = pipe();
      opened.push(readyR, readyW);
      const child = spawn(file, args, { stdio: ["ignore", "ignore", "ignore", outR, errR, readyW], env: { CONTAINER_ID: id, CONTAINER_NAMESPACE: namespace } });
      const failed = new Promise<never>((_, reject) => child.once("error", (e) => reject(classError("unknown", `failed to start binary process: ${e.message}`))));
      failed.catch(() => undefined);
      if (child.pid) reaper?.spawned.add(child.pid);
      child.once("exit", () => child.pid && reaper?.spawned.delete(child.pid));
      // The binary holds the read ends and the ready pipe's writer now.
      for (const fd of [outR, errR, readyW]) closeQuietly(fd);
      opened.splice(0, opened.length, outW, errW, readyR);
      const ready = new Promise<void>((resolve) => {
        const r = new net.Socket({ fd: readyR, readable: true, writable: false });
        const done = (): void => {
          r.destroy();
          resolve();
        };
        r.once("data", done);
        r.once("end", done);
        r.once("error", done);
        r.once("close", done);
      });
      opened.splice(opened.indexOf(readyR), 1);
      await Promise.race([ready, failed]);
      return new LoggingBinary(outW, errW, child);
    } catch (e) {
      for (const fd of opened) closeQuietly(fd);
      throw e;
    }
  }

  /** SIGTERM, then SIGKILL after the grace period (the binary flushes what it read first). */
  stop(): void {
    const c = this.child;
    if (c.exitCode !== null || c.signalCode !== null) return;
    c.kill("SIGTERM");
    const t = setTimeout(() => c.kill("SIGKILL"), TERM_GRACE_MS);
    t.unref();
    c.once("exit", () => clearTimeout(t));
  }
}
