/**
 * A container's log file in the CRI log format the kubelet reads: one entry per line,
 * `TIMESTAMP STREAM TAG CONTENT`, where TIMESTAMP is RFC 3339 with nanoseconds (trailing zeros cut),
 * STREAM `stdout` or `stderr`, TAG `F` for a whole line and `P` for a piece of one: a line longer than
 * `max_container_log_line_size` is cut into `P` pieces ending with an `F`, and what is left without a
 * newline when a stream ends is written as `P`. "\r\n" ends a line like "\n". Both streams write to
 * the one file; `reopen()` starts a new file at the same path (after the kubelet rotated the old one).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { nowNanos } from "#libs/time";

export type LogStream = "stdout" | "stderr";

/** RFC 3339 in UTC with nanoseconds, trailing zeros of the fraction cut (Go's time.RFC3339Nano). */
export function rfc3339Nano(ns: bigint): string {
  const ms = Number(ns / 1_000_000n);
  const base = new Date(ms).toISOString().slice(0, 19);
  const frac = (ns % 1_000_000_000n).toString().padStart(9, "0").replace(/0+$/, "");
  return `${base}${frac ? "." + frac : ""}Z`;
}

/** Cuts a byte stream into CRI log entries for one stream (no I/O: `emit` gets each whole entry). */
export class CriLineSplitter {
  private pending: Buffer[] = [];
  private length = 0;

  constructor(
    private readonly stream: LogStream,
    private readonly maxLen: number,
    private readonly emit: (entry: Buffer) => void,
    private readonly clock: () => bigint = nowNanos,
  ) {}

  write(chunk: Buffer): void {
    let start = 0;
    while (start < chunk.length) {
      const nl = chunk.indexOf(0x0a, start);
      const end = nl < 0 ? chunk.length : nl;
      this.add(chunk.subarray(start, end));
      if (nl < 0) break;
      this.flush("F", true);
      start = nl + 1;
    }
  }

  /** The stream ended: what is left is a partial line. */
  end(): void {
    if (this.length > 0) this.flush("P", false);
  }

  private add(part: Buffer): void {
    while (part.length > 0) {
      if (this.maxLen > 0 && this.length + part.length > this.maxLen) {
        const room = this.maxLen - this.length;
        this.pending.push(part.subarray(0, room));
        this.length += room;
        this.flush("P", false);
        part = part.subarray(room);
      } else {
        this.pending.push(part);
        this.length += part.length;
        part = part.subarray(part.length);
      }
    }
  }

  private flush(tag: "F" | "P", lineEnd: boolean): void {
    let body = Buffer.concat(this.pending, this.length);
    if (lineEnd && body.length > 0 && body[body.length - 1] === 0x0d) body = body.subarray(0, body.length - 1);
    this.pending = [];
    this.length = 0;
    const head = Buffer.from(`${rfc3339Nano(this.clock())} ${this.stream} ${tag} `);
    this.emit(Buffer.concat([head, body, Buffer.from("\n")]));
  }
}

/** The log file of one container (empty path: logging off, everything is dropped). */
export class CriLogFile {
  private out: fs.WriteStream | undefined;
  private readonly splitters = new Map<LogStream, CriLineSplitter>();

  constructor(
    readonly file: string,
    private readonly maxLen: number,
  ) {
    this.out = this.open();
  }

  private open(): fs.WriteStream | undefined {
    if (!this.file) return undefined;
    fs.mkdirSync(path.dirname(this.file), { recursive: true });
    // Opened here, so the file exists (or the error is thrown) when the constructor or reopen() returns.
    const fd = fs.openSync(this.file, "a", 0o640);
    const s = fs.createWriteStream("", { fd });
    s.on("error", () => {
      /* a failed write loses the entry, as containerd's logger does */
    });
    return s;
  }

  /** The writer for one stream. */
  stream(name: LogStream): CriLineSplitter {
    let s = this.splitters.get(name);
    if (!s) {
      s = new CriLineSplitter(name, this.maxLen, (entry) => this.out?.write(entry));
      this.splitters.set(name, s);
    }
    return s;
  }

  /** Close the current file and continue in a new one at the same path. */
  async reopen(): Promise<void> {
    const old = this.out;
    this.out = this.open();
    if (old) await new Promise<void>((resolve) => old.end(resolve));
  }

  /** Flush partial lines and close. */
  async close(): Promise<void> {
    for (const s of this.splitters.values()) s.end();
    const old = this.out;
    this.out = undefined;
    if (old) await new Promise<void>((resolve) => old.end(resolve));
  }
}
