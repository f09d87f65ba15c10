/**
 * Terminals. The runtime creates the pty and sends its master over `--console-socket` with
 * SCM_RIGHTS; Node cannot receive descriptors, so the shim accepts the connection paused and calls
 * recvmsg(2) through koffi. The shim then copies stdin FIFO -> master and master -> stdout FIFO (with
 * backpressure), and closes stdout once the master reports EIO (every slave end closed): the client
 * reads to EOF. After the process exits, whatever it wrote is still in the pty and in the shim's
 * queue: `drained()` resolves once that has all gone to stdout (EIO, or nothing more to read when a
 * leftover child still holds the slave open), before the exit is reported. The master can also read
 * as end-of-file while the kernel hangs the terminal up with output still in it: the stream reads a
 * duplicate of the master, and after its end the rest is read from the original until EIO.
 */
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import * as tty from "node:tty";
import { dupFd, receiveFd, setWinsize } from "#libs/sys/linux";
import { classError } from "#libs/ttrpc/errors";
import type { LoggingBinary } from "./logbinary";
import { closeQuietly, parseTarget, type StdioPaths } from "./stdio";

/** A listening console socket in a private temporary directory. */
export class ConsoleSocket {
  private constructor(readonly path: string, private readonly dir: string, private readonly server: net.Server, private readonly master: Promise<number>) {}

  static async create(timeoutMs = 30_000): Promise<ConsoleSocket> {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "flt-pty-"));
    const p = path.join(dir, "pty.sock");
    let settle!: { resolve: (fd: number) => void; reject: (e: Error) => void };
    const master = new Promise<number>((resolve, reject) => (settle = { resolve, reject }));
    master.catch(() => undefined);
    const server = net.createServer({ pauseOnConnect: true }, (conn) => {
      const fd = (conn as unknown as { _handle?: { fd?: number } })._handle?.fd;
      if (fd === undefined || fd < 0) {
        conn.destroy();
        return settle.reject(classError("internal", "console socket: no descriptor for the connection"));
      }
      const started = Date.now();
      const attempt = (): void => {
        try {
          const r = receiveFd(fd);
          if (r) {
            conn.destroy();
            return settle.resolve(r.fd);
          }
        } catch (e) {
          conn.destroy();
          return settle.reject(e as Error);
        }
        if (Date.now() - started > timeoutMs) {
          conn.destroy();
          return settle.reject(classError("context deadline exceeded", "console socket: no pty master received"));
        }
        setTimeout(attempt, 2);
      };
      attempt();
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(p, () => resolve());
    });
    return new ConsoleSocket(p, dir, server, master);
  }

  /** The pty master, once the runtime sent it. */
  receiveMaster(): Promise<number> {
    return this.master;
  }

  close(): void {
    this.server.close();
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * Copies between the client's FIFOs and a pty master. With a logging binary (a `binary://` stdout),
 * the output goes to the binary's stdout pipe instead, and its stderr pipe is closed at once: a
 * terminal has one output stream, so the binary reads EOF there.
 */
export class ConsoleCopy {
  private readonly master: tty.ReadStream;
  private readonly out?: net.Socket;
  private stdin?: net.Socket;
  private stdinFd = -1;
  /** Resolves when the output is copied and the stdout FIFO closed. */
  readonly done: Promise<void>;
  private finish!: () => void;
  /** Output chunks seen so far (the idle check after exit compares counts). */
  private chunks = 0;
  private waitingDrain = false;
  private closed = false;

  constructor(private readonly masterFd: number, paths: StdioPaths, logger?: LoggingBinary) {
    this.master = new tty.ReadStream(dupFd(masterFd));
    this.master.on("error", () => undefined);
    const outT = parseTarget(paths.stdout);
    if (logger) {
      closeQuietly(logger.stderr);
      // The socket owns the pipe's write end from here: ending it gives the binary EOF on fd 3.
      this.out = new net.Socket({ fd: logger.stdout, readable: false, writable: true });
      this.out.on("error", () => undefined);
    } else if (outT.kind === "fifo" || outT.kind === "file") {
      const fd = outT.kind === "fifo"
        ? fs.openSync(outT.path, fs.constants.O_RDWR)
        : fs.openSync(outT.path, fs.constants.O_WRONLY | fs.constants.O_APPEND | fs.constants.O_CREAT, 0o644);
      this.out = outT.kind === "fifo" ? new net.Socket({ fd, readable: false, writable: true }) : (fs.createWriteStream("", { fd }) as unknown as net.Socket);
      this.out.on("error", () => undefined);
    }
    const inT = parseTarget(paths.stdin);
    if (inT.kind === "fifo") {
      this.stdinFd = fs.openSync(inT.path, fs.constants.O_RDWR);
      this.stdin = new net.Socket({ fd: this.stdinFd, readable: true, writable: false });
      this.stdin.on("error", () => undefined);
      this.stdin.on("data", (b: Buffer) => {
        if (!this.master.write(b)) {
          this.stdin?.pause();
          this.master.once("drain", () => this.stdin?.resume());
        }
      });
    }
    this.done = new Promise<void>((resolve) => {
      let finished = false;
      const finish = (): void => {
        if (finished) return;
        finished = true;
        if (!this.out) return resolve();
        const t = setTimeout(() => {
          this.out!.destroy();
          resolve();
        }, 10_000);
        this.out.end(() => {
          clearTimeout(t);
          this.out!.destroy();
          resolve();
        });
      };
      this.finish = finish;
      // Backpressure stops the reads on the handle itself, not the stream: a paused stream keeps
      // reading into its buffer, and the EIO that follows the process's exit destroys the stream
      // with that buffer (the last kilobytes of output). Stopped reads leave the data in the pty.
      const handle = (this.master as unknown as { _handle?: { readStop(): number; readStart(): number } })._handle;
      this.master.on("data", (b: Buffer) => {
        this.chunks++;
        if (this.out && !this.out.write(b) && !this.waitingDrain) {
          this.waitingDrain = true;
          handle?.readStop();
          this.out.once("drain", () => {
            this.waitingDrain = false;
            if (!this.master.destroyed) handle?.readStart();
          });
        }
      });
      let ended = false;
      const rest = (): void => {
        if (ended) return;
        ended = true;
        void this.readRest().finally(finish);
      };
      this.master.on("end", rest);
      this.master.on("error", rest);
      this.master.on("close", rest);
    });
  }

  /**
   * The process exited: resolves once its output reached stdout. That is EIO on the master when no
   * other process holds the slave; otherwise the pty is read until two checks in a row find nothing
   * new while the copy is not held back by the client.
   */
  drained(stepMs = 100): Promise<void> {
    let seen = -1;
    let idle = 0;
    const t = setInterval(() => {
      if (this.waitingDrain || this.chunks !== seen) {
        seen = this.chunks;
        idle = 0;
        return;
      }
      if (++idle >= 2) this.finish();
    }, stepMs);
    return this.done.finally(() => clearInterval(t));
  }

  /**
   * After the stream's end: read the master until EIO (every slave end closed), or until it has had
   * nothing for a while (a leftover process holds the slave), copying to stdout.
   */
  private async readRest(): Promise<void> {
    const buf = Buffer.alloc(64 * 1024);
    let quiet = 0;
    while (quiet < 20) {
      let n: number;
      try {
        n = this.closed ? 0 : fs.readSync(this.masterFd, buf);
        if (this.closed) return;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== "EAGAIN") return;
        n = -1;
      }
      if (n > 0) {
        quiet = 0;
        this.chunks++;
        const out = this.out;
        if (out && !out.write(Buffer.from(buf.subarray(0, n)))) await new Promise((r) => (out.once("drain", r), out.once("close", r)));
        continue;
      }
      quiet++;
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  resize(width: number, height: number): void {
    setWinsize(this.masterFd, width, height);
  }

  closeStdin(): void {
    this.stdin?.destroy();
    this.stdin = undefined;
  }

  /** Stop copying and release everything (after the process is gone). */
  close(): void {
    this.closeStdin();
    this.master.destroy();
    if (!this.closed) closeQuietly(this.masterFd);
    this.closed = true;
  }
}

export function randomSuffix(): string {
  return crypto.randomBytes(4).toString("hex");
}

export { closeQuietly };
