/**
 * Warm shims: Flotilla's shim is a Node.js process whose start-up (two of them with `shim start`: the
 * subcommand and the daemon) would dominate `ctr run` latency, so the manager keeps a few serving shims
 * started ahead of time (`-warm`: no namespace or bundle yet) with a ttrpc connection open to each. A
 * task's Create adopts one (it learns namespace and bundle from that call) and a replacement starts
 * in the background. A pool shim whose task is deleted goes back to the pool (Release) instead of
 * exiting, so short-lived tasks do not start a process each. A warm shim exits as soon as its
 * connection drops unadopted, so none outlive the tasks process. Configure with `warm_shims`
 * (0 = always use the `start` subcommand).
 */
import { spawn } from "node:child_process";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import type { Logger } from "pino";
import { TtrpcClient } from "#libs/ttrpc";
import type { ShimCommand } from "./runtimes";

export interface WarmShim {
  client: TtrpcClient;
  address: string;
  pid: number;
  /** Came back to the pool after serving a task. */
  recycled?: boolean;
}

export interface WarmPoolOptions {
  size: number;
  socketDir: string;
  /** Environment for the shims (TTRPC_ADDRESS, GRPC_ADDRESS...). */
  env: Record<string, string>;
  address: string;
  publishBinary: string;
  debug: boolean;
  log: Logger;
}

interface Pending {
  shim: Promise<WarmShim>;
  pid: number;
}

interface Slot {
  ready: WarmShim[];
  /** Shims still starting, oldest first; a taker can claim one before it is ready. */
  pending: Pending[];
  /** When a shim last came back (Date.now()). */
  lastReturn: number;
}

export const WARM_NICE = 10;
/** A shim returned this recently puts the pool in recycling mode (see take). */
const RECYCLING_WINDOW_MS = 5000;
const REFILL_DELAY_MS = 1000;

const keyOf = (cmd: ShimCommand): string => JSON.stringify([cmd.argv, cmd.env]);

/**
 * A shim's priority: its nice value, and its session's autogroup nice too. Shims run in a session of
 * their own (detached), and with the kernel's autogroup scheduling a session competes for the CPU as a
 * whole whatever its threads' nice values, so a warm-up at "nice 10" would otherwise still take an
 * equal share from the runc create of the container being started.
 */
export function setShimPriority(pid: number, nice: number): void {
  if (!pid) return;
  try {
    os.setPriority(pid, nice);
  } catch {
    /* exited or not permitted */
  }
  try {
    fs.writeFileSync(`/proc/${pid}/autogroup`, String(nice));
  } catch {
    /* no autogroup scheduling, exited, or not permitted */
  }
}

function raise(pid: number): void {
  setShimPriority(pid, 0);
}

export class WarmPool {
  private readonly slots = new Map<string, Slot>();
  private closed = false;

  constructor(private readonly o: WarmPoolOptions) {}

  get enabled(): boolean {
    return this.o.size > 0;
  }

  /**
   * A warm shim for `cmd`: a ready one, else one already starting (it is further along than a fresh
   * `shim start` would be); undefined when the pool is off or empty. A replacement starts.
   */
  async take(cmd: ShimCommand): Promise<WarmShim | undefined> {
    if (!this.enabled || !cmd.builtin || this.closed) return undefined;
    const slot = this.slot(cmd);
    // The replacement starts after the caller has sent its Create (spawning is synchronous work).
    // While shims come back (short-lived tasks), it waits a little: the one just taken is likely to
    // return before the next task needs one, and then no process has to start at all.
    const recycling = Date.now() - slot.lastReturn < RECYCLING_WINDOW_MS;
    const refill = (): void => {
      if (recycling) setTimeout(() => this.fill(cmd), REFILL_DELAY_MS).unref();
      else setImmediate(() => this.fill(cmd));
    };
    for (;;) {
      const w = slot.ready.shift();
      if (!w) break;
      if (w.client.isOpen) {
        // Full priority before the Create reaches it, not after it has read it at nice 10.
        raise(w.pid);
        refill();
        return w;
      }
    }
    const pending = slot.pending.shift();
    refill();
    if (!pending) return undefined;
    // Someone waits for it now: full priority for the rest of its start-up.
    raise(pending.pid);
    return pending.shim.then((w) => w, () => undefined);
  }

  /**
   * The Create that took a shim of `cmd` is done: shims still starting go on at the normal priority
   * (low only while that container's runc create ran, so a drained pool refills at full speed).
   */
  settled(cmd: ShimCommand): void {
    if (!this.enabled || !cmd.builtin) return;
    for (const p of this.slot(cmd).pending) raise(p.pid);
  }

  /** Start shims until `size` are ready or starting for `cmd`. */
  fill(cmd: ShimCommand): void {
    if (!this.enabled || !cmd.builtin || this.closed) return;
    const slot = this.slot(cmd);
    while (slot.ready.length + slot.pending.length < this.o.size) {
      const started = this.spawn(cmd);
      const p: Pending = { shim: started.shim, pid: started.pid };
      slot.pending.push(p);
      p.shim.then(
        (w) => {
          const i = slot.pending.indexOf(p);
          if (i < 0) return; // claimed by a taker while starting
          slot.pending.splice(i, 1);
          // Closed, or shims came back meanwhile and the pool is full: this one is not needed.
          if (this.closed || slot.ready.length >= this.o.size) return w.client.close();
          slot.ready.push(w);
          w.client.onClose(() => {
            const j = slot.ready.indexOf(w);
            if (j >= 0) slot.ready.splice(j, 1);
          });
        },
        (e: unknown) => {
          const i = slot.pending.indexOf(p);
          if (i >= 0) slot.pending.splice(i, 1);
          this.o.log.warn({ err: (e as Error).message }, "warm shim failed to start");
        },
      );
    }
  }

  private slot(cmd: ShimCommand): Slot {
    const k = keyOf(cmd);
    let s = this.slots.get(k);
    if (!s) this.slots.set(k, (s = { ready: [], pending: [], lastReturn: 0 }));
    return s;
  }

  private spawn(cmd: ShimCommand): { shim: Promise<WarmShim>; pid: number } {
    fs.mkdirSync(this.o.socketDir, { recursive: true, mode: 0o711 });
    const sock = path.join(this.o.socketDir, `w${crypto.randomBytes(12).toString("hex")}`);
    const args = [...cmd.argv.slice(1), "-warm", "-socket", sock, "-address", this.o.address, "-publish-binary", this.o.publishBinary];
    if (this.o.debug) args.push("-debug");
    const child = spawn(cmd.argv[0]!, args, {
      cwd: this.o.socketDir,
      detached: true,
      stdio: "ignore",
      env: { ...process.env, ...cmd.env, ...this.o.env },
    });
    child.unref();
    // Start at a low priority so a warm-up never competes with a container being created; the shim
    // raises itself back to normal when a Create adopts it (or a waiting taker raises it).
    if (child.pid) setShimPriority(child.pid, WARM_NICE);
    let exited = false;
    child.once("exit", () => (exited = true));
    child.once("error", () => (exited = true));
    const shim = (async (): Promise<WarmShim> => {
      try {
        const client = await TtrpcClient.connect(`unix://${sock}`, { retryMs: 30_000 });
        return { client, address: `unix://${sock}`, pid: child.pid ?? 0 };
      } catch (e) {
        if (!exited && child.pid) {
          try {
            process.kill(child.pid, "SIGKILL");
          } catch {
            /* gone */
          }
        }
        throw e;
      }
    })();
    shim.catch(() => undefined);
    return { shim, pid: child.pid ?? 0 };
  }

  /**
   * A pool shim whose task is gone, already told to go back to its warm state (Release): kept as a
   * ready shim when the pool has room (true), else left to the caller to shut down (false).
   */
  giveBack(cmd: ShimCommand, w: WarmShim): boolean {
    if (!this.enabled || !cmd.builtin || this.closed || !w.client.isOpen) return false;
    const slot = this.slot(cmd);
    slot.lastReturn = Date.now();
    if (slot.ready.length >= this.o.size) {
      // Full: the returned shim (already warmed up by use) takes the place of a fresh one.
      const i = slot.ready.findIndex((x) => !x.recycled);
      if (i < 0) return false;
      slot.ready.splice(i, 1)[0]!.client.close();
    }
    w.recycled = true;
    slot.ready.unshift(w);
    w.client.onClose(() => {
      const j = slot.ready.indexOf(w);
      if (j >= 0) slot.ready.splice(j, 1);
    });
    return true;
  }

  /** Release every idle warm shim (they exit when their connection closes). */
  close(): void {
    this.closed = true;
    for (const s of this.slots.values()) {
      for (const w of s.ready.splice(0)) w.client.close();
      for (const p of s.pending.splice(0)) void p.shim.then((w) => w.client.close(), () => undefined);
    }
  }
}
