/**
 * Running a command in a container, as containerd's CRI does: the process spec is the container's
 * own with the new args (and TERM=xterm on a terminal), run through the tasks service as an exec
 * process whose stdio are FIFOs this process makes and opens. stdout (and stderr without a terminal)
 * always exist; output nobody asked for is dropped. The command ends when the process exits and its
 * output is read to the end; a timeout, or the client going away, kills it (SIGKILL).
 */
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as net from "node:net";
import * as path from "node:path";
import type { Readable, Writable } from "node:stream";
import type { CallContext } from "#libs/context";
import type { ContainerStore } from "#libs/core/containers";
import { OCI_PROCESS_TYPE_URL } from "#libs/core/containers";
import type { ExitInfo, TaskService } from "#libs/core/tasks";
import { errDeadlineExceeded, errInternal } from "#libs/errdefs";
import { mkfifo } from "#libs/sys/linux";
import type { TerminalSize } from "./remotecommand";

const SIGKILL = 9;
const { O_RDONLY, O_WRONLY, O_RDWR, O_NONBLOCK } = fs.constants;
/** After the process exits, how long output may stay silent before we stop waiting for its end. */
const DRAIN_IDLE_MS = 2000;

export interface ExecDeps {
  tasks: TaskService;
  containers: Pick<ContainerStore, "get">;
  /** Where the FIFOs of exec processes are made. */
  fifoDir: string;
}

export interface ExecOptions {
  cmd: string[];
  tty: boolean;
  stdin?: Readable;
  stdout?: Writable;
  stderr?: Writable;
  /** Kill the process after this long (0 = no limit); the call then fails with DeadlineExceeded. */
  timeoutMs?: number;
  onResize?: (cb: (s: TerminalSize) => void) => void;
  signal?: AbortSignal;
}

interface ProcessSpec {
  args?: string[];
  env?: string[];
  terminal?: boolean;
  [k: string]: unknown;
}

/** The container's process spec with `cmd` as args. */
export async function execSpec(d: ExecDeps, ctx: CallContext, containerId: string, cmd: string[], tty: boolean): Promise<ProcessSpec> {
  const c = await d.containers.get(ctx, containerId);
  if (!c.spec) throw errInternal(`container "${containerId}" has no spec`);
  const spec = JSON.parse(Buffer.from(c.spec.value).toString()) as { process?: ProcessSpec };
  const p: ProcessSpec = { ...(spec.process ?? {}), args: cmd, terminal: tty };
  if (tty) p.env = [...(p.env ?? []).filter((e) => !e.startsWith("TERM=")), "TERM=xterm"];
  return p;
}

/** An output FIFO read to its end: the writer we hold until the process has its own is let go by `release`. */
function openOutput(p: string, sink: Writable | undefined): { release(): void; done: Promise<void>; stop(): void; lastData: () => number } {
  mkfifo(p, 0o600);
  const rfd = fs.openSync(p, O_RDONLY | O_NONBLOCK);
  let holder = fs.openSync(p, O_WRONLY | O_NONBLOCK);
  const sock = new net.Socket({ fd: rfd, readable: true, writable: false });
  sock.on("error", () => undefined);
  let last = Date.now();
  sock.on("data", (b: Buffer) => {
    last = Date.now();
    if (sink && !sink.destroyed && !sink.write(b)) {
      sock.pause();
      sink.once("drain", () => sock.resume());
    }
  });
  const done = new Promise<void>((res) => {
    sock.once("end", () => res());
    sock.once("close", () => res());
    sock.once("error", () => res());
  });
  const release = (): void => {
    if (holder >= 0) fs.closeSync(holder);
    holder = -1;
  };
  return { release, done, stop: () => (release(), sock.destroy()), lastData: () => last };
}

/** Run `o.cmd` in the running container; resolves with the exit code. */
export async function execInContainer(d: ExecDeps, ctx: CallContext, containerId: string, o: ExecOptions): Promise<number> {
  const spec = await execSpec(d, ctx, containerId, o.cmd, o.tty);
  const execId = randomBytes(32).toString("hex");
  const dir = path.join(d.fifoDir, execId);
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const outs: ReturnType<typeof openOutput>[] = [];
  let stdinSock: net.Socket | undefined;
  let created = false;
  try {
    const paths = { stdin: o.stdin ? path.join(dir, "stdin") : "", stdout: path.join(dir, "stdout"), stderr: o.tty ? "" : path.join(dir, "stderr") };
    outs.push(openOutput(paths.stdout, o.stdout));
    if (paths.stderr) outs.push(openOutput(paths.stderr, o.stderr));
    if (o.stdin) {
      mkfifo(paths.stdin, 0o600);
      stdinSock = new net.Socket({ fd: fs.openSync(paths.stdin, O_RDWR | O_NONBLOCK), readable: false, writable: true });
      stdinSock.on("error", () => undefined);
    }
    await d.tasks.exec(ctx, containerId, execId, { ...paths, terminal: o.tty }, { typeUrl: OCI_PROCESS_TYPE_URL, value: Buffer.from(JSON.stringify(spec)) });
    created = true;
    const exited: Promise<ExitInfo> = d.tasks.wait(ctx, containerId, execId);
    exited.catch(() => undefined);
    let killedBy: "timeout" | "client" | undefined;
    const kill = (why: "timeout" | "client"): void => {
      killedBy ??= why;
      d.tasks.kill(ctx, containerId, SIGKILL, { execId }).catch(() => undefined);
    };
    const onAbort = (): void => kill("client");
    o.signal?.addEventListener("abort", onAbort);
    const timer = o.timeoutMs ? setTimeout(() => kill("timeout"), o.timeoutMs) : undefined;
    try {
      await d.tasks.start(ctx, containerId, execId);
      for (const out of outs) out.release();
      if (o.tty && o.onResize) {
        o.onResize((s) => void d.tasks.resizePty(ctx, containerId, execId, s.width, s.height).catch(() => undefined));
      }
      if (o.stdin && stdinSock) {
        const sock = stdinSock;
        o.stdin.pipe(sock, { end: false });
        o.stdin.once("end", () => {
          sock.end(() => void d.tasks.closeIO(ctx, containerId, execId, true).catch(() => undefined));
        });
      }
      const exit = await exited;
      // The output ends when every holder of the FIFOs' write ends is gone; a background child may
      // keep one, so stop waiting once the output has been silent for a while after the exit.
      const exitSeen = Date.now();
      await Promise.race([
        Promise.all(outs.map((x) => x.done)),
        new Promise<void>((res) => {
          const tick = setInterval(() => {
            if (outs.every((x) => Date.now() - Math.max(exitSeen, x.lastData()) > DRAIN_IDLE_MS)) {
              clearInterval(tick);
              res();
            }
          }, 200);
          void Promise.all(outs.map((x) => x.done)).then(() => clearInterval(tick));
        }),
      ]);
      if (killedBy === "timeout") throw errDeadlineExceeded(`timeout ${o.timeoutMs! / 1000}s exceeded: context deadline exceeded`);
      return exit.exitStatus;
    } finally {
      clearTimeout(timer);
      o.signal?.removeEventListener("abort", onAbort);
    }
  } finally {
    for (const out of outs) out.stop();
    stdinSock?.destroy();
    if (o.stdin) o.stdin.unpipe();
    if (created) await d.tasks.deleteProcess(ctx, containerId, execId).catch(() => undefined);
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
