/**
 * One container in the shim: its bundle, rootfs mounts, OCI runtime, init process and exec'd
 * processes, cgroup, and the OOM watch. Lifecycle rules follow containerd's runc shim
 * (pkg/process/init_state.go): what each state allows, and what each transition publishes.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { classError } from "#libs/ttrpc/errors";
import { cgroupOf, cgroupExists, oomKills, type CgroupInfo } from "./cgroups";
import { deleteStopped, directCapable, startViaExecFifo } from "./direct";
import { detachAll, mountAll, releaseDetached, unmountAll, type Mount } from "#libs/mount";
import { ExecProcess, InitProcess, type Process } from "./process";
import { killError, Runc, RuncError } from "./runc";
import type { Reaper } from "./reaper";
import type { StdioPaths } from "./stdio";

export interface ContainerOptions {
  id: string;
  bundle: string;
  rootfs: Mount[];
  stdio: StdioPaths;
  runc: Runc;
  noPivot: boolean;
  noNewKeyring: boolean;
  checkpoint?: string;
}

export interface ContainerHooks {
  /** A process exited (init or exec); the handler publishes /tasks/exit. */
  onExit(c: Container, p: Process): void;
  onOOM(c: Container): void;
}

export class Container {
  readonly id: string;
  readonly bundle: string;
  readonly runc: Runc;
  readonly init: InitProcess;
  readonly execs = new Map<string, ExecProcess>();
  /** Exec ids reserved between Exec's check and its registration. */
  private readonly reserved = new Set<string>();
  cgroup?: CgroupInfo;
  private rootfs = "";
  private ooms = 0;
  private oomTimer?: NodeJS.Timeout;
  private readonly spec: Record<string, unknown>;
  /** Resolves as soon as the init is reaped (before its exit is recorded, which waits for `busy`). */
  private readonly initGone: Promise<void>;
  private markInitGone!: () => void;
  /** The init has been reaped: its pid may belong to another process now. */
  private initReaped = false;

  constructor(private readonly o: ContainerOptions, private readonly reaper: Reaper, private readonly hooks: ContainerHooks) {
    this.id = o.id;
    this.bundle = o.bundle;
    this.runc = o.runc;
    this.init = new InitProcess(o.id, o.stdio);
    this.initGone = new Promise((r) => (this.markInitGone = r));
    this.spec = JSON.parse(fs.readFileSync(path.join(o.bundle, "config.json"), "utf8")) as Record<string, unknown>;
  }

  /** Milliseconds spent in each step of the last create (for debug logs). */
  timings: Record<string, number> = {};

  /** Mount the rootfs and `runc create` the init process (stopped at the exec FIFO until Start). */
  async create(): Promise<number> {
    let t = performance.now();
    const lap = (k: string): void => {
      const n = performance.now();
      this.timings[k] = Math.round(n - t);
      t = n;
    };
    if (this.o.rootfs.length) {
      this.rootfs = path.join(this.bundle, "rootfs");
      fs.mkdirSync(this.rootfs, { recursive: true, mode: 0o711 });
      mountAll(this.o.rootfs, this.rootfs);
    }
    lap("mount");
    const p = this.init;
    let socket: Awaited<ReturnType<typeof p.openStdio>>;
    try {
      socket = await p.openStdio(this.reaper);
      lap("stdio");
      const pidFile = path.join(this.bundle, "init.pid");
      const created = this.runc.create(this.id, this.bundle, {
        pidFile,
        consoleSocket: socket?.path,
        noPivot: this.o.noPivot,
        noNewKeyring: this.o.noNewKeyring,
        stdio: p.io?.childStdio ?? ["ignore", "ignore", "ignore"],
      });
      const attached = p.attachStdio(socket);
      await Promise.all([created, attached.catch((e) => (socket ? Promise.reject(e) : undefined))]);
      lap("runc");
      p.pid = Number(fs.readFileSync(pidFile, "utf8").trim());
    } catch (e) {
      p.releaseIO();
      await this.runc.delete(this.id, true).catch(() => undefined);
      if (this.rootfs) unmountAll(this.rootfs);
      throw e instanceof RuncError ? classError("unknown", e.message) : e;
    } finally {
      socket?.close();
    }
    this.cgroup = cgroupOf(p.pid);
    lap("cgroup");
    // The OOM baseline is taken before the process runs a single instruction of its own.
    if (this.cgroup) this.ooms = oomKills(this.cgroup);
    this.reaper.watch(p.pid, (status, at) => this.exited(p, status, at));
    return p.pid;
  }

  async start(): Promise<number> {
    const p = this.init;
    switch (p.status) {
      case "created": break;
      case "stopped": throw classError("failed precondition", "cannot start a stopped process");
      case "deleted": throw classError("failed precondition", "cannot start a deleted process");
      case "paused": case "pausing": throw classError("failed precondition", "cannot start a paused process");
      default: throw classError("failed precondition", "cannot start a running process");
    }
    const t0 = performance.now();
    try {
      // runc's start is a read of its exec FIFO: done here when that is safe, saving a runc process.
      // Poststart hooks are run by `runc start` in newer runc releases: with any, runc starts it.
      const direct = this.direct() && !this.hasHooks("poststart") && (await startViaExecFifo(this.runc.stateDir(this.id), this.initGone));
      if (!direct) await this.runc.start(this.id);
    } catch (e) {
      throw e instanceof RuncError ? classError("unknown", e.message) : e;
    }
    this.timings.runcStart = Math.round(performance.now() - t0);
    if (!p.hasExited) p.status = "running";
    this.watchOOM();
    return p.pid;
  }

  /** The process by exec id ("" = init); NotFound when there is none. */
  process(execId: string): Process {
    if (!execId) return this.init;
    const p = this.execs.get(execId);
    if (!p) throw classError("not found", `process ${execId} does not exist`);
    return p;
  }

  all(): Process[] {
    return [this.init, ...this.execs.values()];
  }

  reserveExec(execId: string): void {
    if (this.execs.has(execId) || this.reserved.has(execId)) throw classError("already exists", `id ${execId}`);
    this.reserved.add(execId);
  }

  addExec(execId: string, stdio: StdioPaths, spec: Record<string, unknown>): ExecProcess {
    this.reserved.delete(execId);
    const st = this.init.status;
    if (st === "created") throw classError("failed precondition", "cannot exec in a created state");
    if (st === "stopped" || st === "deleted") throw classError("failed precondition", "cannot exec in a stopped state");
    const e = new ExecProcess(execId, stdio, this.bundle, spec);
    this.execs.set(execId, e);
    return e;
  }

  releaseExec(execId: string): void {
    this.reserved.delete(execId);
  }

  async startExec(e: ExecProcess): Promise<number> {
    const st = this.init.status;
    if (st !== "running" && st !== "paused") throw classError("failed precondition", "cannot start an exec process in a container that is not running");
    const pid = await e.start(this.id, this.runc, this.reaper);
    this.reaper.watch(pid, (status, at) => this.exited(e, status, at));
    return pid;
  }

  async kill(execId: string, signal: number, all: boolean): Promise<void> {
    if (execId) {
      const e = this.process(execId) as ExecProcess;
      e.kill(signal);
      return;
    }
    const p = this.init;
    if (p.status === "deleted") throw classError("not found", "cannot kill a deleted process");
    if (p.hasExited && !all) throw classError("not found", "process already finished");
    if (!all && p.pid > 0 && !this.initReaped && (p.status === "running" || p.status === "created")) {
      // What `runc kill` does for the init: kill(2) on its pid. The pid is still the init's (alive, or a
      // zombie only the shim reaps), so no runtime process is needed. A paused container goes to the
      // runtime (it thaws a frozen cgroup for SIGKILL). A container whose runtime state is gone is not
      // signalled: the runtime would answer that it does not exist.
      if (!fs.existsSync(this.runc.stateDir(this.id))) throw killError(new Error(`container "${this.id}" does not exist`));
      try {
        process.kill(p.pid, signal);
        return;
      } catch (e) {
        throw killError(e);
      }
    }
    try {
      await this.runc.kill(this.id, signal, all);
    } catch (e) {
      throw killError(e);
    }
  }

  async pause(): Promise<void> {
    const p = this.init;
    if (p.status === "created") throw classError("failed precondition", "cannot pause task in created state");
    if (p.status === "paused") throw classError("failed precondition", "cannot pause a paused container");
    if (p.status !== "running") throw classError("failed precondition", `cannot pause a ${p.status} process`);
    p.status = "pausing";
    try {
      await this.runc.pause(this.id);
      if (!p.hasExited) p.status = "paused";
    } catch (e) {
      if (!p.hasExited) p.status = "running";
      throw e instanceof RuncError ? classError("unknown", e.message) : e;
    }
  }

  async resume(): Promise<void> {
    const p = this.init;
    if (p.status === "created") throw classError("failed precondition", "cannot resume task in created state");
    if (p.status === "running") throw classError("failed precondition", "cannot resume a running process");
    if (p.status !== "paused") throw classError("failed precondition", `cannot resume a ${p.status} process`);
    try {
      await this.runc.resume(this.id);
    } catch (e) {
      throw e instanceof RuncError ? classError("unknown", e.message) : e;
    }
    if (!p.hasExited) p.status = "running";
  }

  /** Delete the init process: the runtime state, the rootfs mounts and the I/O. */
  async deleteInit(): Promise<Process> {
    const p = this.init;
    if (p.status === "running" || p.status === "paused" || p.status === "pausing") throw classError("failed precondition", "cannot delete a running process");
    if (p.status === "deleted") throw classError("not found", "cannot delete a deleted process");
    // A stopped container in its own pid namespace has nothing left running: its runc state (cgroups,
    // state directory) is removed here, as runc delete would, unless poststop hooks must run.
    const direct = p.status === "stopped" && this.direct() && !this.hasHooks("poststop") && !this.sharesPidNamespace() && deleteStopped(this.runc.stateDir(this.id));
    const deleting = direct ? Promise.resolve() : this.runc.delete(this.id, p.status === "created");
    // A stopped container no longer uses its rootfs: take it off while the runtime deletes its state
    // (unless poststop hooks, which run during that delete, may still look at it).
    let detached: number[] = [];
    if (p.status === "stopped" && this.rootfs && !this.hasHooks("poststop")) {
      try {
        detached = detachAll(this.rootfs);
      } catch {
        /* retried below */
      }
    }
    try {
      await deleting;
    } catch (e) {
      if (!String((e as Error).message).includes("does not exist")) {
        releaseDetached(detached);
        throw e instanceof RuncError ? classError("unknown", `failed to delete task: ${e.message}`) : e;
      }
    }
    if (!p.hasExited && p.pid) {
      // A created task was killed by the delete: give the reaper a moment to see the exit.
      await Promise.race([p.wait(), new Promise((r) => setTimeout(r, 1000))]);
    }
    await p.outputFlushed();
    for (const e of this.execs.values()) e.releaseIO();
    p.releaseIO();
    this.stopOOM();
    if (this.rootfs) detached.push(...detachAll(this.rootfs));
    p.status = "deleted";
    // The detached mounts' teardown (an overlay syncs its upper filesystem) happens after the reply.
    setImmediate(() => releaseDetached(detached));
    return p;
  }

  async deleteExec(execId: string): Promise<Process> {
    const e = this.process(execId);
    if (e.status === "running" || e.status === "paused" || e.status === "pausing") throw classError("failed precondition", "cannot delete a running process");
    // A terminal's last output is still being copied out: the client reads it to EOF after this call.
    await e.outputFlushed();
    if (this.execs.get(execId) !== e) throw classError("not found", `process ${execId} does not exist`);
    this.execs.delete(execId);
    e.releaseIO();
    e.status = "deleted";
    return e;
  }

  /** A watched pid exited: finish its create/start first, then record the exit and tell the service. */
  private exited(p: Process, status: number, at: Date): void {
    if (p === this.init) {
      this.initReaped = true;
      this.markInitGone();
    }
    void p.busy.catch(() => undefined).then(async () => {
      if (p === this.init) {
        this.checkOOM();
        if (this.sharesPidNamespace()) await this.runc.kill(this.id, 9, true).catch(() => undefined);
        // The container's processes die with its pid namespace; their exits arrive on their own.
      }
      await p.setExited(status, at);
      this.hooks.onExit(this, p);
    });
  }

  /** Start and delete may skip runc (./direct.ts): plain runc with cgroupfs and no extra options. */
  private direct(): boolean {
    const o = this.runc.opts;
    return !o.extraArgs?.length && directCapable(o.binary, o.systemdCgroup);
  }

  private hasHooks(kind: "poststart" | "poststop"): boolean {
    const hooks = this.spec.hooks as Record<string, unknown[] | undefined> | undefined;
    return !!hooks?.[kind]?.length;
  }

  /** containerd's ShouldKillAllOnExit: the spec has no pid namespace of its own. */
  private sharesPidNamespace(): boolean {
    const ns = ((this.spec.linux as Record<string, unknown> | undefined)?.namespaces as { type: string; path?: string }[] | undefined) ?? [];
    return !ns.some((n) => n.type === "pid" && !n.path);
  }

  private watchOOM(): void {
    if (!this.cgroup || this.oomTimer) return;
    this.oomTimer = setInterval(() => this.checkOOM(), 1000);
    this.oomTimer.unref();
  }

  private checkOOM(): void {
    if (!this.cgroup || !cgroupExists(this.cgroup)) return;
    const n = oomKills(this.cgroup);
    if (n > this.ooms) {
      this.ooms = n;
      this.hooks.onOOM(this);
    }
  }

  private stopOOM(): void {
    if (this.oomTimer) clearInterval(this.oomTimer);
    this.oomTimer = undefined;
  }
}
