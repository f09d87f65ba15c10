/**
 * Two runc steps done by the shim itself, saving a runc process (several milliseconds of Go start-up
 * each) on the `ctr run` path. Both act on runc's own state directory (`<root>/<id>`) exactly as runc
 * 1.1 does, and both say "not here" (false) whenever anything is unusual, so the caller runs runc.
 *
 * - Start of a created container: runc's init waits, blocked opening `exec.fifo` for writing, until
 *   someone opens it for reading; it then writes one byte and execs the container's process. runc
 *   start opens the FIFO, reads that byte and removes the FIFO (runc reports a container without
 *   the FIFO as running).
 * - Delete of a stopped container (its init reaped, its own pid namespace, so nothing else of it can
 *   still run): runc delete removes the container's cgroups (the paths in `state.json`) and the state
 *   directory.
 */
import * as fs from "node:fs";
import * as net from "node:net";
import * as path from "node:path";

/** Whether the shim may do these steps itself for this runtime (runc only, cgroupfs, no systemd notify). */
export function directCapable(binary: string, systemdCgroup: boolean | undefined): boolean {
  return path.basename(binary) === "runc" && !systemdCgroup && !process.env.NOTIFY_SOCKET;
}

/**
 * Let a created container's init run: read its byte from `<stateDir>/exec.fifo` and remove the FIFO.
 * Resolves true once started; false (FIFO absent, or the init gone without writing) for runc to
 * decide (and report) instead. `gone` resolves when the init has exited.
 */
export function startViaExecFifo(stateDir: string, gone: Promise<unknown>): Promise<boolean> {
  const fifo = path.join(stateDir, "exec.fifo");
  let fd: number;
  try {
    if (!fs.lstatSync(fifo).isFIFO()) return Promise.resolve(false);
    // Non-blocking: the open itself never waits; the init's pending open for writing completes now.
    fd = fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  } catch {
    return Promise.resolve(false);
  }
  return new Promise<boolean>((resolve) => {
    let done = false;
    const sock = new net.Socket({ fd, readable: true, writable: false });
    const finish = (started: boolean): void => {
      if (done) return;
      done = true;
      if (started) {
        try {
          fs.unlinkSync(fifo);
        } catch {
          /* removed meanwhile */
        }
      }
      sock.destroy();
      resolve(started);
    };
    sock.on("data", (b: Buffer) => finish(b.length > 0));
    // The init closed the FIFO without writing (it failed): runc start would fail too; let it say why.
    sock.on("end", () => finish(false));
    sock.on("error", () => finish(false));
    void gone.then(() => {
      if (done) return;
      // The init is gone: its byte, if it wrote one, is in the FIFO now (never read by the socket yet).
      let n = 0;
      try {
        n = fs.readSync(fd, Buffer.alloc(16), 0, 16, null);
      } catch {
        n = 0;
      }
      finish(n > 0);
    });
  });
}

interface RuncState {
  cgroup_paths?: Record<string, string>;
  intel_rdt_path?: string;
}

/**
 * Remove a stopped container's runc state: its cgroups, then `stateDir`. False (nothing removed
 * beyond empty cgroups) when a cgroup is still busy or the state is not what this expects.
 */
export function deleteStopped(stateDir: string): boolean {
  let st: RuncState;
  try {
    st = JSON.parse(fs.readFileSync(path.join(stateDir, "state.json"), "utf8")) as RuncState;
  } catch {
    return false;
  }
  if (st.intel_rdt_path) return false;
  for (const p of new Set(Object.values(st.cgroup_paths ?? {}))) {
    if (!p) continue;
    try {
      fs.rmdirSync(p);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT") return false;
    }
  }
  try {
    fs.rmSync(stateDir, { recursive: true, force: true });
  } catch {
    return false;
  }
  return true;
}
