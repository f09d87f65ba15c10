/**
 * The kubelet's remote command protocol (exec and attach) over an upgraded connection, server side.
 *
 * SPDY: the client opens one stream per role, named by its `streamType` header (error, stdin, stdout,
 * stderr, resize); the server waits until every stream the request asked for exists (at most the
 * stream creation timeout), runs the command, then reports on the error stream: with
 * `v4.channel.k8s.io` a JSON metav1.Status (Success, or Failure with reason NonZeroExitCode and the
 * code as an ExitCode cause), with the older protocols the error text only. Resize messages are JSON
 * `{"Width":W,"Height":H}` values, one after another.
 *
 * Websocket: the same roles as channels 0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize; the server
 * first sends an empty message on the lowest channel it writes, to say the connection is ready.
 */
import type { IncomingMessage } from "node:http";
import { PassThrough, Writable, type Readable } from "node:stream";
import type { SpdyStream } from "./spdy";
import { acceptSpdy, acceptWebSocket, isWebSocketRequest } from "./upgrade";
import type { WebSocketConn } from "./websocket";
import type { Duplex } from "node:stream";

export const REMOTECOMMAND_PROTOCOLS = ["v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io"];
export const REMOTECOMMAND_WS_PROTOCOLS = ["v4.channel.k8s.io", "v4.base64.channel.k8s.io", "channel.k8s.io", "base64.channel.k8s.io", ""];

export interface StreamOptions {
  stdin: boolean;
  stdout: boolean;
  stderr: boolean;
  tty: boolean;
}

export interface TerminalSize {
  width: number;
  height: number;
}

/** What a command runs with: the client's streams, its terminal sizes, and a signal for a client gone. */
export interface CommandIO {
  stdin?: Readable;
  stdout?: Writable;
  stderr?: Writable;
  tty: boolean;
  onResize(cb: (size: TerminalSize) => void): void;
  signal: AbortSignal;
}

/** A command that ran and exited non-zero; the message is what the status reports. */
export class ExitCodeError extends Error {
  constructor(readonly exitCode: number, message: string) {
    super(message);
  }
}

export type CommandHandler = (io: CommandIO) => Promise<void>;

export interface Timeouts {
  /** How long the client has to open its streams. */
  streamCreationMs: number;
  /** How long a connection may carry nothing before it is closed (0 = never). */
  idleMs: number;
}

/** The metav1.Status the v4 protocols put on the error stream. */
export function statusJson(err?: Error): string {
  if (!err) return JSON.stringify({ metadata: {}, status: "Success" });
  if (err instanceof ExitCodeError) {
    return JSON.stringify({
      metadata: {}, status: "Failure", message: `command terminated with non-zero exit code: ${err.message}`, reason: "NonZeroExitCode",
      details: { causes: [{ reason: "ExitCode", message: String(err.exitCode) }] },
    });
  }
  return JSON.stringify({
    metadata: {}, status: "Failure", message: `Internal error occurred: ${err.message}`, reason: "InternalError",
    details: { causes: [{ message: err.message }] }, code: 500,
  });
}

/** Split a stream of concatenated JSON resize messages. */
export class ResizeDecoder {
  private text = "";

  constructor(private readonly cb: (s: TerminalSize) => void) {}

  push(b: Buffer): void {
    this.text += b.toString();
    for (;;) {
      const start = this.text.indexOf("{");
      const end = this.text.indexOf("}", start);
      if (start < 0 || end < 0) return;
      const one = this.text.slice(start, end + 1);
      this.text = this.text.slice(end + 1);
      try {
        const v = JSON.parse(one) as { Width?: number; Height?: number };
        this.cb({ width: Number(v.Width ?? 0), height: Number(v.Height ?? 0) });
      } catch {
        /* a malformed size is ignored, as the kubelet logs and goes on */
      }
    }
  }
}

function ended(w: Writable): Promise<void> {
  return new Promise((res) => {
    if (w.writableFinished || w.destroyed) return res();
    w.once("finish", () => res());
    w.once("close", () => res());
    w.end();
  });
}

/** Serve one exec or attach request on an upgrade (SPDY or websocket). */
export function serveRemoteCommand(req: IncomingMessage, socket: Duplex, head: Buffer, opts: StreamOptions, handler: CommandHandler, t: Timeouts): void {
  if (isWebSocketRequest(req)) {
    const up = acceptWebSocket(req, socket, head, REMOTECOMMAND_WS_PROTOCOLS, t.idleMs);
    if (up) void runOverWebSocket(up.conn, up.protocol.startsWith("v4."), opts, handler);
    return;
  }
  const up = acceptSpdy(req, socket, head, REMOTECOMMAND_PROTOCOLS, t.idleMs);
  if (!up) return;
  const { session, protocol } = up;
  const resizing = opts.tty && (protocol === "v4.channel.k8s.io" || protocol === "v3.channel.k8s.io");
  const expected = 1 + Number(opts.stdin) + Number(opts.stdout) + Number(opts.stderr && !opts.tty) + Number(resizing);
  const streams = new Map<string, SpdyStream>();
  const timer = setTimeout(() => session.close(), t.streamCreationMs);
  session.on("error", () => undefined);
  session.on("stream", (s: SpdyStream) => {
    const kind = s.header("streamType") ?? "";
    if (!["error", "stdin", "stdout", "stderr", "resize"].includes(kind) || streams.has(kind)) {
      s.destroy();
      session.close();
      return;
    }
    streams.set(kind, s);
    if (streams.size < expected) return;
    clearTimeout(timer);
    void runOverSpdy(session, streams, opts, protocol === "v4.channel.k8s.io", handler);
  });
}

async function runOverSpdy(session: { close(): void; on(e: "close", f: () => void): unknown }, streams: Map<string, SpdyStream>, opts: StreamOptions, v4: boolean, handler: CommandHandler): Promise<void> {
  const gone = new AbortController();
  session.on("close", () => gone.abort());
  const resize = streams.get("resize");
  const io: CommandIO = {
    stdin: streams.get("stdin"),
    stdout: streams.get("stdout"),
    stderr: opts.tty ? undefined : streams.get("stderr"),
    tty: opts.tty,
    onResize: (cb) => {
      if (!resize) return;
      const d = new ResizeDecoder(cb);
      resize.on("data", (b: Buffer) => d.push(b));
    },
    signal: gone.signal,
  };
  let failure: Error | undefined;
  try {
    await handler(io);
  } catch (e) {
    failure = e as Error;
  }
  for (const k of ["stdout", "stderr"]) {
    const s = streams.get(k);
    if (s) await ended(s);
  }
  const errStream = streams.get("error")!;
  if (v4) errStream.write(statusJson(failure));
  else if (failure) errStream.write(failure.message);
  await ended(errStream);
  session.close();
}

/** A writable that sends what it gets as messages on one websocket channel. */
class ChannelWriter extends Writable {
  constructor(private readonly conn: WebSocketConn, private readonly channel: number) {
    super();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (e?: Error | null) => void): void {
    if (this.conn.isClosed) return cb();
    this.conn.sendOn(this.channel, chunk, () => cb());
  }
}

async function runOverWebSocket(conn: WebSocketConn, v4: boolean, opts: StreamOptions, handler: CommandHandler): Promise<void> {
  const gone = new AbortController();
  const stdin = opts.stdin ? new PassThrough() : undefined;
  const resizers: ((s: TerminalSize) => void)[] = [];
  const decoder = new ResizeDecoder((s) => resizers.forEach((f) => f(s)));
  conn.on("message", (ch: number, data: Buffer) => {
    if (ch === 0) stdin?.write(data);
    else if (ch === 4 && opts.tty) decoder.push(data);
  });
  conn.on("close", () => {
    stdin?.end();
    gone.abort();
  });
  const stdout = opts.stdout ? new ChannelWriter(conn, 1) : undefined;
  const stderr = opts.stderr && !opts.tty ? new ChannelWriter(conn, 2) : undefined;
  conn.sendOn(opts.stdout ? 1 : opts.stderr ? 2 : 3, Buffer.alloc(0));
  let failure: Error | undefined;
  try {
    await handler({ stdin, stdout, stderr, tty: opts.tty, onResize: (cb) => resizers.push(cb), signal: gone.signal });
  } catch (e) {
    failure = e as Error;
  }
  for (const w of [stdout, stderr]) if (w) await ended(w);
  if (v4) conn.sendOn(3, Buffer.from(statusJson(failure)));
  else if (failure) conn.sendOn(3, Buffer.from(failure.message));
  conn.close();
}
