/**
 * gRPC over HTTP/2, the parts Flotilla's server and the gateway's proxy share: message framing
 * (1 flag byte, 4 length bytes, the message), the `grpc-timeout` header, the percent-encoded
 * `grpc-message`, and status-only ("trailers-only") answers.
 */
import * as fs from "node:fs";
import * as http2 from "node:http2";
import * as net from "node:net";
import * as path from "node:path";
import { grpcTarget, unixPath } from "../config";
import { tcpConnectOptions, type TlsMaterial } from "./tls";
import { acceptUnixConnections, destroyPeeking } from "./authority";

export const GRPC_CONTENT_TYPE = "application/grpc";

/**
 * Node's per-session memory cap (MB). Past it nghttp2 refuses every new stream (REFUSED_STREAM), and
 * wide flow-control windows let a busy session buffer far more than Node's 10 MB default; memory is
 * bounded by the windows instead (as grpc-js does, which sets no cap).
 */
export const SESSION_MEMORY_MB = 1 << 20;

/**
 * The largest DATA frame a Flotilla endpoint accepts (HTTP/2's default is 16 KiB). Node's HTTP/2 sends
 * frames as large as its peer allows, so a 1 MiB content write between two processes crosses as a few
 * frames instead of 64, which costs both sides less (Go's gRPC, as in ctr, keeps sending 16 KiB frames).
 */
export const MAX_FRAME_SIZE = 1 << 20;

/**
 * Percent-encode a status message as gRPC requires (printable ASCII except '%' stays as is). A message
 * quoting a huge name keeps its head and tail only: Node refuses to send a header block over 64 KiB
 * (the stream would end in FRAME_SIZE_ERROR instead of the status).
 */
export function encodeStatusMessage(m: string): string {
  const HEAD = 2048;
  const TAIL = 512;
  const cut = m.length > HEAD + TAIL + 64 ? `${m.slice(0, HEAD)}...(${m.length - HEAD - TAIL} characters left out)...${m.slice(-TAIL)}` : m;
  // By code point (a pair of surrogates is one character); a lone surrogate becomes U+FFFD.
  return cut.replace(/[^\x20-\x24\x26-\x7e]/gu, (c) => (c.length === 1 && c >= "\ud800" && c <= "\udfff" ? "%EF%BF%BD" : encodeURIComponent(c)));
}

/** The status fields of a trailer block (or a trailers-only answer); `details` is an encoded google.rpc.Status. */
export function statusTrailers(code: number, message: string, details?: Buffer): http2.OutgoingHttpHeaders {
  const t: http2.OutgoingHttpHeaders = { "grpc-status": String(code), "grpc-message": encodeStatusMessage(message) };
  if (details) t["grpc-status-details-bin"] = details.toString("base64");
  return t;
}

/** Answer a stream whose response has not started with a status alone, and end it. */
export function respondStatusOnly(stream: http2.ServerHttp2Stream, code: number, message: string, details?: Buffer): void {
  if (stream.destroyed || stream.closed || stream.headersSent) return;
  try {
    stream.respond(
      { [http2.constants.HTTP2_HEADER_STATUS]: 200, "content-type": GRPC_CONTENT_TYPE, ...statusTrailers(code, message, details) },
      { endStream: true },
    );
  } catch {
    /* the stream went away meanwhile */
  }
}

/** Milliseconds of a `grpc-timeout` header ("<digits><H|M|S|m|u|n>"), or undefined. */
export function parseGrpcTimeout(v: string | string[] | undefined): number | undefined {
  const s = Array.isArray(v) ? v[0] : v;
  const m = s ? /^(\d{1,8})([HMSmun])$/.exec(s) : null;
  if (!m) return undefined;
  const unit = { H: 3600000, M: 60000, S: 1000, m: 1, u: 1e-3, n: 1e-6 }[m[2] as "H"];
  return Number(m[1]) * unit;
}

/** The 5-byte prefix of an uncompressed message of `length` bytes. */
export function framePrefix(length: number): Buffer {
  const p = Buffer.allocUnsafe(5);
  p[0] = 0;
  p.writeUInt32BE(length, 1);
  return p;
}

/**
 * Reusable buffers for large incoming messages. A message that spans several DATA chunks is copied
 * into one buffer; at 1 MiB a message (ctr's content Write) a fresh allocation each time makes the
 * collector run every few dozen MiB. A consumer that knows it is done with every view of a message
 * (the content writer, once the bytes are on disk) hands it back with `release`; a message never
 * handed back is simply collected. One per process (the service context's `buffers`), shared by its
 * gRPC server and what consumes its messages.
 */
const POOL_MIN = 64 * 1024;
const POOL_CLASS = 64 * 1024;
const POOL_MAX_BYTES = 16 * 1024 * 1024;

export class MessageBuffers {
  private readonly outstanding = new WeakSet<ArrayBufferLike>();
  private readonly freeByClass = new Map<number, Buffer[]>();
  private pooledBytes = 0;

  take(n: number): Buffer {
    if (n < POOL_MIN) return Buffer.allocUnsafe(n);
    const cls = Math.ceil(n / POOL_CLASS) * POOL_CLASS;
    const free = this.freeByClass.get(cls);
    let b = free?.pop();
    if (b) this.pooledBytes -= cls;
    else b = Buffer.allocUnsafeSlow(cls);
    this.outstanding.add(b.buffer);
    return b.subarray(0, n);
  }

  /** Hand back the pooled buffer under `view` (no effect for any other buffer, or a second time). */
  release(view: Uint8Array): void {
    const ab = view.buffer;
    if (!this.outstanding.delete(ab)) return;
    const cls = ab.byteLength;
    if (this.pooledBytes + cls > POOL_MAX_BYTES) return;
    let free = this.freeByClass.get(cls);
    if (!free) this.freeByClass.set(cls, (free = []));
    free.push(Buffer.from(ab, 0, cls));
    this.pooledBytes += cls;
  }
}

export class FramingError extends Error {
  constructor(readonly grpcCode: number, message: string) {
    super(message);
  }
}

/**
 * Splits a request body into messages. `push` returns the complete messages the chunk finished;
 * a message larger than `maxMessage` or a compressed one is a FramingError.
 */
export class FrameReader {
  private chunks: Buffer[] = [];
  private len = 0;
  private need = -1;

  /** `buffers`: where a message spanning chunks is copied to (a plain allocation without). */
  constructor(private readonly maxMessage: number, private readonly buffers?: MessageBuffers) {}

  push(chunk: Buffer): Buffer[] {
    if (chunk.length) {
      this.chunks.push(chunk);
      this.len += chunk.length;
    }
    const out: Buffer[] = [];
    for (;;) {
      if (this.need < 0) {
        if (this.len < 5) break;
        const head = this.take(5);
        if (head[0] !== 0) throw new FramingError(12 /* UNIMPLEMENTED */, "compressed messages are not supported (grpc-encoding identity only)");
        const n = head.readUInt32BE(1);
        if (n > this.maxMessage) throw new FramingError(8 /* RESOURCE_EXHAUSTED */, `received message larger than max (${n} vs. ${this.maxMessage})`);
        this.need = n;
      }
      if (this.len < this.need) break;
      out.push(this.take(this.need));
      this.need = -1;
    }
    return out;
  }

  /** The next `n` buffered bytes (copied only when they span chunks). */
  private take(n: number): Buffer {
    if (n === 0) return Buffer.alloc(0);
    this.len -= n;
    const first = this.chunks[0]!;
    if (first.length >= n) {
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    const out = this.buffers ? this.buffers.take(n) : Buffer.allocUnsafe(n);
    let off = 0;
    while (off < n) {
      const c = this.chunks[0]!;
      const k = Math.min(c.length, n - off);
      c.copy(out, off, 0, k);
      off += k;
      if (k === c.length) this.chunks.shift();
      else this.chunks[0] = c.subarray(k);
    }
    return out;
  }

  /** True when the body ended in the middle of a message. */
  get partial(): boolean {
    return this.need >= 0 || this.len > 0;
  }
}

/**
 * An HTTP/2 client session to a unix or TCP address, receiving with `windowBytes` stream windows. A TCP
 * peer is dialled with TLS when `tls` (a client certificate and the CA) is given (see tls.ts).
 */
export function connectHttp2(address: string, windowBytes: number, tls?: TlsMaterial): http2.ClientHttp2Session {
  const sock = unixPath(address);
  const settings = { initialWindowSize: windowBytes, enablePush: false, maxFrameSize: MAX_FRAME_SIZE };
  if (sock) return http2.connect("http://localhost", { createConnection: () => net.connect({ path: sock }), settings, maxSessionMemory: SESSION_MEMORY_MB });
  const { authority, options } = tcpConnectOptions(grpcTarget(address), tls);
  return http2.connect(authority, { ...options, settings, maxSessionMemory: SESSION_MEMORY_MB });
}

/** A plain or a TLS HTTP/2 server. */
export type H2Server = http2.Http2Server | http2.Http2SecureServer;

/**
 * Bind an HTTP/2 server to a unix (`unix:///path`, `/path`) or TCP (`host:port`) address. A stale
 * socket file is removed first. Resolves with the TCP port (0 for unix) and the socket path, if any.
 */
export async function listenHttp2(server: H2Server, address: string): Promise<{ port: number; socketPath?: string }> {
  const sock = unixPath(address);
  const listen = (...args: unknown[]): Promise<void> =>
    new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      (server.listen as (...a: unknown[]) => void)(...args, () => {
        server.off("error", reject);
        resolve();
      });
    });
  if (sock) {
    fs.mkdirSync(path.dirname(sock), { recursive: true });
    fs.rmSync(sock, { force: true });
    // grpc-go clients dialled with a bare socket path (the kubelet, crictl) send it as :authority.
    acceptUnixConnections(server);
    await listen(sock);
    fs.chmodSync(sock, 0o660);
    return { port: 0, socketPath: sock };
  }
  const t = grpcTarget(address);
  const i = t.lastIndexOf(":");
  const host = t.slice(0, i).replace(/^\[|\]$/g, "") || "0.0.0.0";
  await listen(Number(t.slice(i + 1)), host);
  const a = server.address();
  return { port: typeof a === "object" && a ? a.port : 0 };
}

/** Close an HTTP/2 server gracefully: no new sessions, GOAWAY to each, destroy what is left after `graceMs`. */
export async function closeHttp2(server: H2Server, sessions: Set<http2.Http2Session>, graceMs: number): Promise<void> {
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  destroyPeeking(server);
  for (const s of sessions) {
    try {
      s.close();
    } catch {
      /* already closing */
    }
  }
  const timer = setTimeout(() => {
    for (const s of sessions) s.destroy();
  }, graceMs);
  await closed;
  clearTimeout(timer);
}

/**
 * Write `buf` to an HTTP/2 stream. When its buffer is full, resolve on 'drain', or reject with
 * `closed()` if the stream closes first.
 */
export function writeWithDrain(stream: http2.Http2Stream, buf: Buffer, closed: () => unknown): Promise<void> {
  if (stream.write(buf)) return Promise.resolve();
  return new Promise<void>((resolve, reject) => {
    const onDrain = (): void => {
      stream.off("close", onClose);
      resolve();
    };
    const onClose = (): void => {
      stream.off("drain", onDrain);
      reject(closed());
    };
    stream.once("drain", onDrain);
    stream.once("close", onClose);
  });
}
