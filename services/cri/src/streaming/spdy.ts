/**
 * The server half of SPDY/3.1 as kubelet clients (Go's spdystream) speak it after an HTTP upgrade:
 * the client opens every stream (SYN_STREAM, odd ids) with its role in the headers, the server
 * answers each with an empty SYN_REPLY, data flows both ways in DATA frames (FIN half-closes), and
 * RST_STREAM, PING and GOAWAY are honoured. spdystream applies no flow control, so WINDOW_UPDATE and
 * SETTINGS are read and ignored.
 *
 * Header blocks are one zlib stream per direction over the SPDY/3 dictionary. Incoming blocks go
 * through one inflater (frames are handled strictly in order while a block inflates); outgoing ones
 * are stored (uncompressed) deflate blocks, each list closed by a sync-flush mark.
 */
import { Duplex } from "node:stream";
import * as zlib from "node:zlib";
import { UpgradedConn } from "./conn";

const WORDS = [
  "options", "head", "post", "put", "delete", "trace", "accept", "accept-charset", "accept-encoding", "accept-language",
  "accept-ranges", "age", "allow", "authorization", "cache-control", "connection", "content-base", "content-encoding",
  "content-language", "content-length", "content-location", "content-md5", "content-range", "content-type", "date", "etag",
  "expect", "expires", "from", "host", "if-match", "if-modified-since", "if-none-match", "if-range", "if-unmodified-since",
  "last-modified", "location", "max-forwards", "pragma", "proxy-authenticate", "proxy-authorization", "range", "referer",
  "retry-after", "server", "te", "trailer", "transfer-encoding", "upgrade", "user-agent", "vary", "via", "warning",
  "www-authenticate", "method", "get", "status", "200 OK", "version", "HTTP/1.1", "url", "public", "set-cookie", "keep-alive", "origin",
];
const TAIL =
  "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505203 Non-Authoritative Information" +
  "204 No Content301 Moved Permanently400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error" +
  "501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, " +
  "GMTchunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,text/javascript," +
  "publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.";

/** The SPDY/3 header compression dictionary (1423 bytes): length-prefixed words, then a run of text. */
export const SPDY_DICTIONARY: Buffer = Buffer.concat([
  ...WORDS.map((w) => {
    const b = Buffer.alloc(4 + w.length);
    b.writeUInt32BE(w.length, 0);
    b.write(w, 4, "latin1");
    return b;
  }),
  Buffer.from(TAIL, "latin1"),
]);

const VERSION = 3;
export const FrameType = { SynStream: 1, SynReply: 2, RstStream: 3, Settings: 4, Ping: 6, GoAway: 7, Headers: 8, WindowUpdate: 9 } as const;
const FLAG_FIN = 0x01;
export const RstStatus = { ProtocolError: 1, InvalidStream: 2, RefusedStream: 3, Cancel: 5, InternalError: 6 } as const;

export type SpdyHeaders = Record<string, string[]>;

/** Encode a header block (before compression): count, then length-prefixed names and NUL-joined values. */
export function encodeHeaderBlock(h: SpdyHeaders): Buffer {
  const parts: Buffer[] = [u32(Object.keys(h).length)];
  for (const [k, v] of Object.entries(h)) {
    const name = Buffer.from(k.toLowerCase());
    const value = Buffer.from(v.join("\0"));
    parts.push(u32(name.length), name, u32(value.length), value);
  }
  return Buffer.concat(parts);
}

export function decodeHeaderBlock(b: Buffer): SpdyHeaders {
  const out: SpdyHeaders = {};
  let off = 0;
  const need = (n: number): void => {
    if (off + n > b.length) throw new Error("spdy: truncated header block");
  };
  need(4);
  const count = b.readUInt32BE(off);
  off += 4;
  for (let i = 0; i < count; i++) {
    need(4);
    const nl = b.readUInt32BE(off);
    need(4 + nl + 4);
    const name = b.subarray(off + 4, off + 4 + nl).toString().toLowerCase();
    off += 4 + nl;
    const vl = b.readUInt32BE(off);
    need(4 + vl);
    out[name] = [...(out[name] ?? []), ...b.subarray(off + 4, off + 4 + vl).toString().split("\0")];
    off += 4 + vl;
  }
  return out;
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0, 0);
  return b;
}

function controlFrame(type: number, flags: number, body: Buffer): Buffer {
  const h = Buffer.alloc(8);
  h.writeUInt16BE(0x8000 | VERSION, 0);
  h.writeUInt16BE(type, 2);
  h.writeUInt32BE(((flags & 0xff) << 24) | body.length, 4);
  return Buffer.concat([h, body]);
}

function dataFrame(streamId: number, flags: number, data: Buffer): Buffer {
  const h = Buffer.alloc(8);
  h.writeUInt32BE(streamId & 0x7fffffff, 0);
  h.writeUInt32BE(((flags & 0xff) << 24) | data.length, 4);
  return Buffer.concat([h, data]);
}

/**
 * Inflates the peer's header blocks: one zlib stream for the whole connection, each block ending in
 * a sync flush, so a flush after writing it yields exactly that block's headers.
 */
class HeaderInflater {
  private readonly z = zlib.createInflate({ dictionary: SPDY_DICTIONARY });
  private out: Buffer[] = [];
  private failed?: Error;

  constructor() {
    this.z.on("data", (b: Buffer) => this.out.push(b));
    this.z.on("error", (e: Error) => (this.failed = e));
  }

  inflate(block: Buffer): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      if (this.failed) return reject(this.failed);
      this.z.write(block);
      this.z.flush(zlib.constants.Z_SYNC_FLUSH, () => {
        const b = Buffer.concat(this.out);
        this.out = [];
        if (this.failed) reject(this.failed);
        else resolve(b);
      });
    });
  }

  close(): void {
    this.z.destroy();
  }
}

/**
 * Deflates our header blocks as stored blocks of one zlib stream (its header once), each block list
 * ending with an empty stored block: the sync-flush mark after which Go's inflater hands the bytes
 * over without reading on into the next frame.
 */
class HeaderDeflater {
  private started = false;

  deflate(raw: Buffer): Buffer {
    const parts: Buffer[] = [];
    if (!this.started) {
      parts.push(Buffer.from([0x78, 0x01]));
      this.started = true;
    }
    for (let off = 0; off < raw.length; off += 0xffff) parts.push(storedBlock(raw.subarray(off, off + 0xffff)));
    parts.push(storedBlock(Buffer.alloc(0)));
    return Buffer.concat(parts);
  }
}

/** A non-final stored deflate block (byte aligned: we only ever write these). */
function storedBlock(chunk: Buffer): Buffer {
  const h = Buffer.alloc(5);
  h.writeUInt16LE(chunk.length, 1);
  h.writeUInt16LE(~chunk.length & 0xffff, 3);
  return Buffer.concat([h, chunk]);
}

/** One SPDY stream as a Duplex: what the peer sends is readable, what we write goes out as DATA. */
export class SpdyStream extends Duplex {
  remoteFinished = false;
  private localFinished = false;
  private reset = false;

  constructor(private readonly session: SpdySession, readonly id: number, readonly headers: SpdyHeaders) {
    super({ allowHalfOpen: true });
  }

  /** The first value of a request header (names are lower case on the wire). */
  header(name: string): string | undefined {
    return this.headers[name.toLowerCase()]?.[0];
  }

  override _read(): void {
    /* data is pushed as frames arrive */
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (e?: Error | null) => void): void {
    if (this.reset || this.localFinished) return cb();
    this.session.sendData(this.id, chunk, false, cb);
  }

  override _final(cb: (e?: Error | null) => void): void {
    if (this.reset || this.localFinished) return cb();
    this.localFinished = true;
    this.session.sendData(this.id, Buffer.alloc(0), true, cb);
    this.session.maybeForget(this);
  }

  override _destroy(err: Error | null, cb: (e: Error | null) => void): void {
    if (!this.reset && !(this.localFinished && this.remoteFinished)) this.session.sendReset(this.id, RstStatus.Cancel);
    this.reset = true;
    this.session.forget(this.id);
    cb(err);
  }

  get closedLocally(): boolean {
    return this.localFinished;
  }

  /** Frames from the session. */
  onData(data: Buffer, fin: boolean): void {
    if (data.length) this.push(data);
    if (fin && !this.remoteFinished) {
      this.remoteFinished = true;
      this.push(null);
      this.session.maybeForget(this);
    }
  }

  onReset(): void {
    this.reset = true;
    if (!this.remoteFinished) {
      this.remoteFinished = true;
      this.push(null);
    }
    this.destroy();
  }
}

/**
 * The server side of one upgraded connection. Emits "stream" (SpdyStream) for every SYN_STREAM after
 * answering it, and "close" when the connection is gone.
 */
export class SpdySession extends UpgradedConn {
  private readonly streams = new Map<number, SpdyStream>();
  private buf: Buffer = Buffer.alloc(0);
  private readonly inflater = new HeaderInflater();
  private readonly deflater = new HeaderDeflater();
  private lastStreamId = 0;
  private frames: Promise<void> = Promise.resolve();

  constructor(socket: Duplex, head: Buffer, idleTimeoutMs = 0) {
    super(socket, head, idleTimeoutMs);
  }

  /** Streams still open. */
  get size(): number {
    return this.streams.size;
  }

  protected onBytes(b: Buffer): void {
    if (this.closed) return;
    this.buf = this.buf.length ? Buffer.concat([this.buf, b]) : b;
    while (this.buf.length >= 8) {
      const len = this.buf.readUInt32BE(4) & 0xffffff;
      if (this.buf.length < 8 + len) break;
      const frame = this.buf.subarray(0, 8 + len);
      this.buf = this.buf.subarray(8 + len);
      // In order: a header block is inflated asynchronously, and the frames after it wait.
      this.frames = this.frames
        .then(() => (this.closed ? undefined : this.onFrame(frame)))
        .catch((e: unknown) => {
          if (this.closed) return;
          this.goAway(1);
          this.emit("error", e);
          this.close();
        });
    }
  }

  private async onFrame(f: Buffer): Promise<void> {
    const flags = f[4]!;
    const body = f.subarray(8);
    if (!(f[0]! & 0x80)) {
      const id = f.readUInt32BE(0) & 0x7fffffff;
      this.streams.get(id)?.onData(body, (flags & FLAG_FIN) !== 0);
      return;
    }
    const type = f.readUInt16BE(2);
    switch (type) {
      case FrameType.SynStream: {
        const id = body.readUInt32BE(0) & 0x7fffffff;
        const headers = decodeHeaderBlock(await this.inflater.inflate(body.subarray(10)));
        if (id <= this.lastStreamId || id % 2 === 0) {
          this.sendReset(id, RstStatus.ProtocolError);
          return;
        }
        this.lastStreamId = id;
        const s = new SpdyStream(this, id, headers);
        s.on("error", () => undefined);
        this.streams.set(id, s);
        this.write(controlFrame(FrameType.SynReply, 0, Buffer.concat([u32(id), this.deflater.deflate(encodeHeaderBlock({}))])));
        if (flags & FLAG_FIN) s.onData(Buffer.alloc(0), true);
        this.emit("stream", s);
        return;
      }
      case FrameType.RstStream:
        this.streams.get(body.readUInt32BE(0) & 0x7fffffff)?.onReset();
        return;
      case FrameType.Ping:
        this.write(controlFrame(FrameType.Ping, 0, body.subarray(0, 4)));
        return;
      case FrameType.GoAway:
        this.close();
        return;
      case FrameType.Headers:
        await this.inflater.inflate(body.subarray(4));
        if (flags & FLAG_FIN) this.streams.get(body.readUInt32BE(0) & 0x7fffffff)?.onData(Buffer.alloc(0), true);
        return;
      default:
        return; // SETTINGS, WINDOW_UPDATE, unknown: nothing to do
    }
  }

  private write(b: Buffer, cb?: (e?: Error | null) => void): void {
    this.send(b, cb ? () => cb() : undefined);
  }

  sendData(id: number, data: Buffer, fin: boolean, cb: (e?: Error | null) => void): void {
    this.touch();
    const MAX = 32 * 1024;
    for (let off = 0; off < data.length; off += MAX) {
      const last = off + MAX >= data.length;
      this.write(dataFrame(id, last && fin ? FLAG_FIN : 0, data.subarray(off, off + MAX)), last ? cb : undefined);
    }
    if (!data.length) this.write(dataFrame(id, fin ? FLAG_FIN : 0, data), cb);
  }

  sendReset(id: number, status: number): void {
    this.write(controlFrame(FrameType.RstStream, 0, Buffer.concat([u32(id), u32(status)])));
  }

  private goAway(status: number): void {
    this.write(controlFrame(FrameType.GoAway, 0, Buffer.concat([u32(this.lastStreamId), u32(status)])));
  }

  maybeForget(s: SpdyStream): void {
    if (s.remoteFinished && s.closedLocally) this.streams.delete(s.id);
  }

  forget(id: number): void {
    this.streams.delete(id);
  }

  protected goodbye(): void {
    this.goAway(0);
  }

  /** Every stream still open is reset. */
  protected onClosed(): void {
    for (const s of [...this.streams.values()]) s.onReset();
    this.streams.clear();
    this.inflater.close();
  }
}
