/**
 * A process's stdio without a terminal. The container gets the client's FIFOs directly (no copy
 * through the shim), opened so that no open ever blocks the event loop:
 *
 * - stdout/stderr: the shim first opens a read end (O_RDONLY|O_NONBLOCK, never read from), then the
 *   write end for the container (which cannot block, a reader exists). The kept read end means the
 *   container never gets EPIPE after the client detaches, as with containerd's shim. When the process
 *   exits its write ends close, so the client reads to EOF: nothing is left to flush.
 * - stdin: the shim opens the FIFO O_RDWR and keeps it (the writer containerd's shim holds), then a
 *   plain O_RDONLY end for the container (no block: a writer exists). The container sees EOF only after
 *   the client closed its end and CloseIO released the shim's.
 *
 * `file://` URIs and plain paths that are not FIFOs are appended to; empty paths are /dev/null. With a
 * `binary://` stdout, stdout and stderr are the pipes of a logging binary (./logbinary.ts).
 */
import type { StdioOptions } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { classError } from "#libs/ttrpc/errors";
import type { LoggingBinary } from "./logbinary";

export interface StdioPaths {
  stdin: string;
  stdout: string;
  stderr: string;
  terminal: boolean;
  /** The namespace, for a `binary://` logger's environment. */
  namespace?: string;
}

const { O_RDONLY, O_WRONLY, O_RDWR, O_NONBLOCK, O_APPEND, O_CREAT } = fs.constants;

type Target = { kind: "null" } | { kind: "fifo"; path: string } | { kind: "file"; path: string } | { kind: "binary"; url: URL };

export function parseTarget(p: string): Target {
  if (!p) return { kind: "null" };
  if (p.includes("://")) {
    let u: URL;
    try {
      u = new URL(p);
    } catch {
      throw classError("invalid argument", `unable to parse stdio uri ${JSON.stringify(p)}`);
    }
    const scheme = u.protocol.replace(/:$/, "");
    const file = decodeURIComponent(u.pathname);
    if (scheme === "fifo") return { kind: "fifo", path: file };
    if (scheme === "file") return { kind: "file", path: file };
    if (scheme === "binary") return { kind: "binary", url: u };
    throw classError("invalid argument", `unknown STDIO scheme ${scheme}`);
  }
  let st: fs.Stats | undefined;
  try {
    st = fs.statSync(p);
  } catch {
    st = undefined;
  }
  if (st?.isFIFO()) return { kind: "fifo", path: p };
  return { kind: "file", path: p };
}

export class ProcessIO {
  /** What to hand the runtime as fds 0, 1, 2. */
  readonly childStdio: StdioOptions = [];
  private readonly held: number[] = [];
  private readonly forChild: number[] = [];
  private stdinWriter = -1;

  constructor(readonly paths: StdioPaths, private readonly logger?: LoggingBinary) {
    const stdio: (number | "ignore")[] = ["ignore", "ignore", "ignore"];
    try {
      // stdin
      const inT = parseTarget(paths.stdin);
      if (inT.kind === "fifo") {
        this.stdinWriter = fs.openSync(inT.path, O_RDWR);
        this.held.push(this.stdinWriter);
        stdio[0] = this.child(fs.openSync(inT.path, O_RDONLY));
      } else if (inT.kind === "file") {
        stdio[0] = this.child(fs.openSync(inT.path, O_RDONLY));
      }
      if (logger) {
        stdio[1] = this.child(logger.stdout);
        stdio[2] = this.child(logger.stderr);
        this.childStdio = stdio;
        return;
      }
      // stdout, stderr (the same target shares one fd)
      const outFd = this.openOutput(paths.stdout);
      if (outFd !== undefined) stdio[1] = outFd;
      if (paths.stderr && paths.stderr === paths.stdout) stdio[2] = stdio[1]!;
      else {
        const errFd = this.openOutput(paths.stderr);
        if (errFd !== undefined) stdio[2] = errFd;
      }
    } catch (e) {
      this.close();
      this.afterSpawn();
      const err = e as NodeJS.ErrnoException;
      if (err.code && err.path) throw classError(err.code === "ENOENT" ? "not found" : "unknown", `failed to create process I/O: open ${err.path}: ${err.code}`);
      throw e;
    }
    this.childStdio = stdio;
  }

  private child(fd: number): number {
    this.forChild.push(fd);
    return fd;
  }

  private openOutput(p: string): number | undefined {
    const t = parseTarget(p);
    if (t.kind === "null") return undefined;
    if (t.kind === "binary") throw classError("invalid argument", "a binary:// URI is taken for stdout only");
    if (t.kind === "fifo") {
      this.held.push(fs.openSync(t.path, O_RDONLY | O_NONBLOCK));
      return this.child(fs.openSync(t.path, O_WRONLY));
    }
    fs.mkdirSync(path.dirname(t.path), { recursive: true, mode: 0o755 });
    return this.child(fs.openSync(t.path, O_WRONLY | O_APPEND | O_CREAT, 0o644));
  }

  /** The runtime has the child's ends: drop the shim's copies of them. */
  afterSpawn(): void {
    for (const fd of this.forChild.splice(0)) closeQuietly(fd);
  }

  /** CloseIO{stdin}: release the shim's writer so the container reads EOF once the client closed too. */
  closeStdin(): void {
    if (this.stdinWriter < 0) return;
    const fd = this.stdinWriter;
    this.stdinWriter = -1;
    const i = this.held.indexOf(fd);
    if (i >= 0) this.held.splice(i, 1);
    closeQuietly(fd);
  }

  /** The process is deleted: a logging binary gets SIGTERM (after it read what the process wrote). */
  stopLogger(): void {
    this.logger?.stop();
  }

  close(): void {
    this.stdinWriter = -1;
    for (const fd of this.held.splice(0)) closeQuietly(fd);
  }
}

export function closeQuietly(fd: number): void {
  try {
    fs.closeSync(fd);
  } catch {
    /* already closed */
  }
}
