/**
 * The stdio of a CRI container, held by the CRI process: FIFOs under the container's state directory
 * (stdin when the config asks for it, stdout, and stderr without a terminal) that the task's shim
 * writes to. Output goes to the container's CRI log file and to every attached session; an attach
 * session may also write to stdin.
 *
 * FIFO ends are opened non-blocking (libuv's threads must never wait on an open): each output FIFO's
 * read end first, plus a write end of our own that keeps it from reading end-of-file until the shim
 * holds its own write end (`connected()`, after Tasks.Create); from then on the end of the container's
 * output is the end of the stream.
 */
import * as fs from "node:fs";
import * as net from "node:net";
import * as path from "node:path";
import { mkfifo } from "#libs/sys/linux";
import { CriLogFile, type LogStream } from "./logfile";

const { O_RDONLY, O_WRONLY, O_RDWR, O_NONBLOCK } = fs.constants;

export interface ContainerFifos { stdin: string; stdout: string; stderr: string; terminal: boolean }

export interface AttachStreams {
  stdin?: NodeJS.ReadableStream;
  stdout?: NodeJS.WritableStream;
  stderr?: NodeJS.WritableStream;
  tty: boolean;
  signal: AbortSignal;
}

/** The FIFO paths of container `id` in `dir` (stdin/stderr "" when the container has none). */
export function fifoPaths(dir: string, id: string, stdin: boolean, tty: boolean): ContainerFifos {
  return {
    stdin: stdin ? path.join(dir, `${id}-stdin`) : "",
    stdout: path.join(dir, `${id}-stdout`),
    stderr: tty ? "" : path.join(dir, `${id}-stderr`),
    terminal: tty,
  };
}

/** Make the FIFOs (those already there are kept: a restarted CRI process reuses them). */
export function makeFifos(dir: string, f: ContainerFifos): void {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  for (const p of [f.stdin, f.stdout, f.stderr]) if (p && !fs.existsSync(p)) mkfifo(p, 0o700);
}

type Sink = NodeJS.WritableStream;

export class ContainerIO {
  private readonly readers: net.Socket[] = [];
  private keepOpen: number[] = [];
  private stdinSock: net.Socket | undefined;
  private readonly sinks: Record<LogStream, Set<Sink>> = { stdout: new Set(), stderr: new Set() };
  private open = 0;
  private readonly done: Promise<void>;
  private finish!: () => void;
  readonly log: CriLogFile;

  constructor(
    readonly id: string,
    readonly fifos: ContainerFifos,
    logPath: string,
    maxLineSize: number,
    /** stdin_once: the first attach session's end closes the container's stdin (with this callback). */
    private readonly stdinOnce: { once: boolean; closeStdin: () => Promise<void> },
  ) {
    this.log = new CriLogFile(logPath, maxLineSize);
    this.done = new Promise((resolve) => (this.finish = resolve));
    const outputs: [LogStream, string][] = [["stdout", fifos.stdout]];
    if (fifos.stderr) outputs.push(["stderr", fifos.stderr]);
    for (const [name, p] of outputs) {
      const fd = fs.openSync(p, O_RDONLY | O_NONBLOCK);
      this.keepOpen.push(fs.openSync(p, O_WRONLY | O_NONBLOCK));
      const sock = new net.Socket({ fd, readable: true, writable: false });
      this.open++;
      const split = this.log.stream(name);
      sock.on("data", (chunk: Buffer) => {
        split.write(chunk);
        for (const s of this.sinks[name]) s.write(chunk);
      });
      const ended = (): void => {
        split.end();
        for (const s of this.sinks[name]) s.end();
        this.sinks[name].clear();
        if (--this.open === 0) this.finish();
      };
      sock.once("end", ended);
      sock.once("error", () => sock.destroy());
      sock.once("close", () => {
        if (!sock.readableEnded) ended();
      });
      this.readers.push(sock);
    }
    if (fifos.stdin) {
      const sock = new net.Socket({ fd: fs.openSync(fifos.stdin, O_RDWR | O_NONBLOCK), readable: false, writable: true });
      sock.on("error", () => sock.destroy());
      this.stdinSock = sock;
    }
  }

  /** The shim holds the FIFOs now: drop our own write ends, so the container's exit ends the output. */
  connected(): void {
    for (const fd of this.keepOpen) fs.closeSync(fd);
    this.keepOpen = [];
  }

  /** Resolves once every output stream has ended. */
  wait(): Promise<void> {
    return this.done;
  }

  /**
   * Attach a session until its signal aborts or the container's output ends. When its stdin ends, a
   * stdin_once container (without a terminal) gets its stdin closed and the session stays for the
   * output; otherwise the session ends there.
   */
  async attach(s: AttachStreams): Promise<void> {
    if (s.signal.aborted) return;
    const added: [LogStream, Sink][] = [];
    if (s.stdout) added.push(["stdout", s.stdout]);
    if (s.stderr && !this.fifos.terminal) added.push(["stderr", s.stderr]);
    for (const [n, w] of added) this.sinks[n].add(w);
    const aborted = new Promise<void>((resolve) => s.signal.addEventListener("abort", () => resolve(), { once: true }));
    const ends: Promise<void>[] = [this.done, aborted];
    let stdinDone: Promise<void> | undefined;
    const stdin = this.stdinSock;
    if (stdin && s.stdin) {
      const src = s.stdin;
      stdinDone = new Promise<void>((resolve) => {
        const onData = (b: Buffer | string): void => {
          if (!stdin.destroyed) stdin.write(b);
        };
        src.on("data", onData);
        const end = (): void => {
          src.removeListener("data", onData);
          resolve();
        };
        src.once("end", end);
        src.once("close", end);
        src.once("error", end);
        s.signal.addEventListener("abort", end, { once: true });
      });
      if (this.stdinOnce.once && !s.tty) {
        const closing = stdinDone.then(async () => {
          if (s.signal.aborted || stdin.destroyed || this.stdinSock !== stdin) return;
          this.stdinSock = undefined;
          await new Promise<void>((resolve) => stdin.end(resolve));
          await this.stdinOnce.closeStdin().catch(() => undefined);
        });
        if (!added.length) ends.push(closing);
      } else ends.push(stdinDone);
    }
    // Nothing of the container's to follow: the session ends at once.
    if (!added.length && !stdinDone) return;
    await Promise.race(ends);
    for (const [n, w] of added) this.sinks[n].delete(w);
  }

  /** Stop reading, close every end and the log file. */
  async close(): Promise<void> {
    this.connected();
    for (const r of this.readers) r.destroy();
    this.stdinSock?.destroy();
    this.stdinSock = undefined;
    await this.log.close();
  }
}
