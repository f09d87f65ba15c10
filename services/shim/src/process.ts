/**
 * The processes of a container as the shim tracks them: the init process (the container itself) and
 * exec'd processes. Each has containerd's states (created, running, paused, pausing, stopped,
 * deleted), its stdio (FIFOs given to the container, or a terminal copy), its pid and exit, and a
 * promise that Wait calls share.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { classError } from "#libs/ttrpc/errors";
import { ConsoleCopy, ConsoleSocket } from "./console";
import { LoggingBinary } from "./logbinary";
import { closeQuietly, parseTarget, ProcessIO, type StdioPaths } from "./stdio";
import type { Reaper } from "./reaper";
import type { Runc } from "./runc";

export type ProcStatus = "created" | "running" | "stopped" | "paused" | "pausing" | "deleted";

/** containerd.v1.types.Status */
export const STATUS_CODE: Record<ProcStatus, number> = { created: 1, running: 2, stopped: 3, paused: 4, pausing: 5, deleted: 3 };

export interface Exit {
  status: number;
  at: Date;
}

export abstract class Process {
  pid = 0;
  status: ProcStatus = "created";
  exitStatus = 0;
  exitedAt?: Date;
  io?: ProcessIO;
  console?: ConsoleCopy;
  /** The logging binary of a terminal's `binary://` stdout (the console copy writes to it). */
  private consoleLogger?: LoggingBinary;
  /**
   * The W3C trace context (`traceparent`) of the last call that acted on the process (its Create,
   * Start, Kill or Delete): its /tasks/exit carries it.
   */
  trace?: string;
  /** A create or start in flight: an exit seen meanwhile is handled after it (events keep their order). */
  busy: Promise<unknown> = Promise.resolve();
  private readonly exited: Promise<Exit>;
  private flushed: Promise<void> = Promise.resolve();
  private resolveExit!: (e: Exit) => void;

  constructor(readonly id: string, readonly stdio: StdioPaths) {
    this.exited = new Promise((r) => (this.resolveExit = r));
  }

  get hasExited(): boolean {
    return this.exitedAt !== undefined;
  }

  wait(): Promise<Exit> {
    return this.exited;
  }

  /**
   * Record the exit. Resolves (and so do Wait calls) once the output written before it reached the
   * client: a terminal's pty is drained first, so the exit is reported after the last byte.
   */
  setExited(status: number, at: Date): Promise<void> {
    if (this.exitedAt) return this.flushed;
    this.exitStatus = status;
    this.exitedAt = at;
    if (this.status !== "deleted") this.status = "stopped";
    this.io?.close();
    const c = this.console;
    this.flushed = c ? c.drained().then(() => c.close()) : Promise.resolve();
    return this.flushed.then(() => this.resolveExit({ status, at }));
  }

  /** Resolves once the output of an exited process has been copied out (at once without a terminal). */
  outputFlushed(): Promise<void> {
    return this.flushed;
  }

  /**
   * Open the process's stdio; for a terminal, a console socket for the runtime. A `binary://` stdout
   * starts the logging binary and waits until it is ready.
   */
  async openStdio(reaper?: Reaper): Promise<ConsoleSocket | undefined> {
    const out = parseTarget(this.stdio.stdout);
    const logger = out.kind === "binary" ? await LoggingBinary.start(out.url, this.id, this.stdio.namespace ?? "", reaper) : undefined;
    if (this.stdio.terminal) {
      this.consoleLogger = logger;
      return ConsoleSocket.create();
    }
    this.io = new ProcessIO(this.stdio, logger);
    return undefined;
  }

  /** After the runtime created the process: take the pty master (terminal) or drop the child's fds. */
  async attachStdio(socket: ConsoleSocket | undefined): Promise<void> {
    if (socket) {
      const fd = await socket.receiveMaster();
      this.console = new ConsoleCopy(fd, this.stdio, this.consoleLogger);
    } else {
      this.io?.afterSpawn();
    }
  }

  closeStdin(): void {
    this.io?.closeStdin();
    this.console?.closeStdin();
  }

  resize(width: number, height: number): void {
    if (!this.console) return;
    this.console.resize(width, height);
  }

  releaseIO(): void {
    this.io?.close();
    this.io?.stopLogger();
    this.io?.afterSpawn();
    this.console?.close();
    const logger = this.consoleLogger;
    if (logger) {
      // Without a console copy (the runtime failed) the pipes' write ends are still the shim's.
      if (!this.console) for (const fd of [logger.stdout, logger.stderr]) closeQuietly(fd);
      this.consoleLogger = undefined;
      logger.stop();
    }
  }
}

export class InitProcess extends Process {}

export class ExecProcess extends Process {
  constructor(
    id: string,
    stdio: StdioPaths,
    readonly bundle: string,
    private readonly spec: Record<string, unknown>,
  ) {
    super(id, stdio);
  }

  /** `runc exec --detach`: returns the pid (the process is re-parented to the shim). */
  async start(containerId: string, runc: Runc, reaper?: Reaper): Promise<number> {
    if (this.status !== "created") throw classError("failed precondition", this.status === "stopped" ? "cannot start a stopped process" : "cannot start a running process");
    const spec = { ...this.spec, terminal: this.stdio.terminal };
    const processFile = path.join(this.bundle, `.exec-${this.id}.json`);
    const pidFile = path.join(this.bundle, `${this.id}.pid`);
    fs.writeFileSync(processFile, JSON.stringify(spec), { mode: 0o600 });
    let socket: ConsoleSocket | undefined;
    try {
      socket = await this.openStdio(reaper);
      const created = runc.exec(containerId, processFile, { pidFile, consoleSocket: socket?.path, stdio: this.io?.childStdio ?? ["ignore", "ignore", "ignore"] });
      const attached = this.attachStdio(socket);
      await Promise.all([created, attached.catch((e) => (socket ? Promise.reject(e) : undefined))]);
      this.pid = Number(fs.readFileSync(pidFile, "utf8").trim());
      this.status = "running";
      return this.pid;
    } catch (e) {
      this.releaseIO();
      throw e;
    } finally {
      socket?.close();
      fs.rmSync(processFile, { force: true });
    }
  }

  kill(signal: number): void {
    if (this.pid === 0) throw classError("failed precondition", "process not created");
    if (this.hasExited) throw classError("not found", "process already finished");
    try {
      process.kill(this.pid, signal);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ESRCH") throw classError("not found", "process already finished");
      throw classError("unknown", `exec kill error: ${(e as Error).message}`);
    }
  }
}
