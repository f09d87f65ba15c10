/**
 * Content Read served by the gateway from the blob files, read-only, when the content process runs on
 * the same host. `ctr content get` (and every remote ReaderAt) reads a blob in 32 KiB windows, one Read
 * call each, so a 1 GiB blob is 32,768 calls; through the gateway each would cross two processes.
 *
 * The content process stays the owner and the judge: a (namespace, digest) pair is served here only
 * while the content process's database holds the blob in that namespace (`holds`, a read-only view of
 * it: see views.ts), checked at every call; anything else goes to the owner, which answers as always.
 * A descriptor kept open is also checked for its file having been removed (nlink 0) every
 * NLINK_CHECK_MS, so a blob gone from disk is never served.
 */
import * as fs from "node:fs";
import * as http2 from "node:http2";
import { errOutOfRange, toGrpc } from "#libs/errdefs";
import { blobFile } from "#services/content/public";
import { encodeStatusMessage, GRPC_CONTENT_TYPE, respondStatusOnly, writeWithDrain } from "#libs/grpc/wire";

export const CONTENT_READ_PATH = "/containerd.services.content.v1.Content/Read";
const CHUNK = 1 << 20;
const FD_IDLE_MS = 5000;
/** A descriptor kept open is checked this often for its file having been removed (nlink 0). */
export const NLINK_CHECK_MS = 20;

interface OpenFd {
  fd: number;
  size: number;
  refs: number;
  lastUsed: number;
  /** When the file's link count was last checked. */
  checked: number;
  closed: boolean;
}

/** Pooled frame buffers: one 32 KiB window per call would otherwise be two fresh allocations. */
const POOLED_DATA = 64 * 1024;
/** gRPC prefix (5) + offset tag and varint (11) + data tag and length varint (6). */
const FRAME_HEAD_MAX = 22;
const POOL_MAX = 32;

/** One ReadContentResponse{offset, data} as a length-prefixed gRPC frame, data read in place. */
export class Frame {
  private len: number;
  constructor(
    readonly buf: Buffer,
    private readonly start: number,
    readonly dataAt: number,
    private dataLen: number,
    readonly pooled: boolean,
  ) {
    this.len = dataAt + dataLen - start;
  }

  /** Fewer bytes were read than asked: rewrite the lengths (same varint width, padded). */
  shrink(dataLen: number): void {
    this.dataLen = dataLen;
    this.len = this.dataAt + dataLen - this.start;
    writeHead(this.buf, this.start, this.dataAt, dataLen);
  }

  bytes(): Buffer {
    return this.buf.subarray(this.start, this.start + this.len);
  }
}

function varintLen(v: number): number {
  let n = 1;
  while (v >= 128) {
    v = Math.floor(v / 128);
    n++;
  }
  return n;
}

function putVarint(buf: Buffer, at: number, v: number, width: number): number {
  for (let i = 0; i < width - 1; i++) {
    buf[at++] = (v % 128) | 0x80;
    v = Math.floor(v / 128);
  }
  buf[at++] = v;
  return at;
}

/** Rewrite the lengths of a frame for a shorter data field (its length varint keeps its width, padded). */
function writeHead(buf: Buffer, start: number, dataAt: number, dataLen: number): void {
  // Find the data tag: it sits right after the offset field (or at start+5 when the offset is 0).
  let p = start + 5;
  if (buf[p] === 0x08) {
    p++;
    while (buf[p]! & 0x80) p++;
    p++;
  }
  // p: data tag (0x12); the length varint spans p+1 .. dataAt-1.
  putVarint(buf, p + 1, dataLen, dataAt - p - 1);
  buf.writeUInt32BE(dataAt + dataLen - start - 5, start + 1);
}

/** Frame buffers for reuse (DirectContentReads keeps one for its calls). */
export class FramePool {
  private readonly free: Buffer[] = [];

  take(offset: number, dataLen: number): Frame {
    const head = 5 + (offset > 0 ? 1 + varintLen(offset) : 0) + 1 + varintLen(dataLen);
    const pooled = dataLen <= POOLED_DATA;
    const buf = pooled ? this.free.pop() ?? Buffer.allocUnsafe(POOLED_DATA + FRAME_HEAD_MAX) : Buffer.allocUnsafe(head + dataLen);
    let p = 0;
    buf[p++] = 0;
    buf.writeUInt32BE(head - 5 + dataLen, 1);
    p = 5;
    if (offset > 0) {
      buf[p++] = 0x08;
      p = putVarint(buf, p, offset, varintLen(offset));
    }
    buf[p++] = 0x12;
    p = putVarint(buf, p, dataLen, varintLen(dataLen));
    return new Frame(buf, 0, p, dataLen, pooled);
  }

  give(f: Frame): void {
    if (f.pooled && this.free.length < POOL_MAX) this.free.push(f.buf);
  }
}

/**
 * ReadContentRequest{string digest = 1; int64 offset = 2; int64 size = 3} from `buf[at..]`, or
 * undefined for anything else (unknown or repeated-in-another-type fields, negative numbers, a digest
 * that is not sha256:<64 hex>).
 */
export function decodeReadRequest(buf: Buffer, at: number): ReadRequest | undefined {
  let pos = at;
  const end = buf.length;
  const varint = (): number | undefined => {
    let result = 0;
    for (let shift = 0; shift < 63; shift += 7) {
      if (pos >= end) return undefined;
      const b = buf[pos++]!;
      result += (b & 0x7f) * 2 ** shift;
      if ((b & 0x80) === 0) return result;
    }
    return undefined; // 10-byte varints are negative int64s
  };
  let digest = "";
  let offset = 0;
  let size = 0;
  while (pos < end) {
    const tag = varint();
    if (tag === 10) {
      const len = varint();
      if (len === undefined || pos + len > end) return undefined;
      digest = buf.toString("latin1", pos, pos + len);
      pos += len;
    } else if (tag === 16 || tag === 24) {
      const v = varint();
      if (v === undefined || v > Number.MAX_SAFE_INTEGER) return undefined;
      if (tag === 16) offset = v;
      else size = v;
    } else return undefined;
  }
  if (!/^sha256:[a-f0-9]{64}$/.test(digest)) return undefined;
  return { digest, offset, size };
}

export interface ReadRequest {
  digest: string;
  offset: number;
  size: number;
}

/** Whether namespace `ns` holds blob `digest` (undefined: cannot tell now; the owner answers). */
export type BlobHolds = (ns: string, digest: string) => boolean | undefined;

export class DirectContentReads {
  /** Frame buffers of this process's reads, reused call after call. */
  private readonly frames = new FramePool();
  private readonly fds = new Map<string, OpenFd>();
  private readonly sweeper: NodeJS.Timeout;

  constructor(private readonly contentRoot: string, private readonly holds: BlobHolds) {
    this.sweeper = setInterval(() => this.sweep(), FD_IDLE_MS);
    this.sweeper.unref();
  }

  /**
   * The request, if it is one well-formed ReadContentRequest frame for a sha256 blob with a
   * non-negative offset and size and no other fields (else undefined, and the owner answers). Decoded
   * by hand: this runs once per 32 KiB window of every `ctr content get`.
   */
  parse(body: Buffer): ReadRequest | undefined {
    if (body.length < 5 || body[0] !== 0 || body.readUInt32BE(1) !== body.length - 5) return undefined;
    return decodeReadRequest(body, 5);
  }

  /** True when `namespace` holds `digest` as of the owner's last commit. */
  allowed(namespace: string, digest: string): boolean {
    try {
      return this.holds(namespace, digest) === true;
    } catch {
      return false;
    }
  }

  private async open(digest: string): Promise<OpenFd> {
    const cur = this.fds.get(digest);
    const now = Date.now();
    if (cur && !cur.closed && now - cur.checked >= NLINK_CHECK_MS && ((cur.checked = now), fs.fstatSync(cur.fd).nlink === 0)) {
      // The blob was removed from disk: never serve it from a descriptor kept open.
      this.fds.delete(digest);
      cur.closed = true;
      if (cur.refs === 0) fs.close(cur.fd, () => undefined);
      throw Object.assign(new Error("blob removed"), { code: "ENOENT" });
    }
    if (cur && !cur.closed) {
      cur.refs++;
      cur.lastUsed = Date.now();
      return cur;
    }
    const file = blobFile(this.contentRoot, digest);
    const fd = await new Promise<number>((resolve, reject) => fs.open(file, fs.constants.O_RDONLY, (err, d) => (err ? reject(err) : resolve(d))));
    let size: number;
    try {
      size = fs.fstatSync(fd).size;
    } catch (e) {
      fs.closeSync(fd);
      throw e;
    }
    const entry: OpenFd = { fd, size, refs: 1, lastUsed: Date.now(), checked: Date.now(), closed: false };
    const again = this.fds.get(digest);
    if (again && !again.closed) {
      fs.closeSync(fd);
      again.refs++;
      return again;
    }
    this.fds.set(digest, entry);
    return entry;
  }

  private release(e: OpenFd): void {
    e.refs--;
    e.lastUsed = Date.now();
    if (e.closed && e.refs === 0) fs.close(e.fd, () => undefined);
  }

  private sweep(): void {
    const now = Date.now();
    for (const [d, e] of this.fds) {
      if (e.refs === 0 && now - e.lastUsed > FD_IDLE_MS) {
        e.closed = true;
        this.fds.delete(d);
        fs.close(e.fd, () => undefined);
      }
    }
  }

  /**
   * Serve one Read. Resolves with the gRPC status sent and how many messages went out, or undefined
   * when the blob's file is not there (nothing was sent; the owner must answer).
   */
  async serve(down: http2.ServerHttp2Stream, req: ReadRequest): Promise<{ code: number; message: string; messages: number } | undefined> {
    let f: OpenFd;
    try {
      f = await this.open(req.digest);
    } catch {
      return undefined;
    }
    try {
      let offset = Math.max(0, req.offset);
      let size = req.size;
      if (offset > f.size) {
        const st = toGrpc(errOutOfRange(`read past object length ${f.size} bytes`));
        respondStatusOnly(down, st.code, st.details);
        return { code: st.code, message: st.details, messages: 0 };
      }
      if (size <= 0 || offset + size > f.size) size = f.size - offset;
      down.respond({ [http2.constants.HTTP2_HEADER_STATUS]: 200, "content-type": GRPC_CONTENT_TYPE }, { waitForTrailers: true, sendDate: false } as http2.ServerStreamResponseOptions);
      // The last message goes out with the end of the stream (for a small blob: headers and DATA in one write).
      let final: Frame | undefined;
      let messages = 0;
      while (size > 0) {
        if (down.destroyed || down.closed) return { code: 1, message: "call canceled by client", messages };
        const n = Math.min(CHUNK, size);
        const frame = this.frames.take(offset, n);
        // A blob's bytes come from the page cache almost always: a synchronous pread of at most 1 MiB
        // costs less than the thread-pool round trip of an asynchronous one. Read straight into the frame.
        const bytesRead = fs.readSync(f.fd, frame.buf, frame.dataAt, n, offset);
        if (bytesRead === 0) {
          this.frames.give(frame);
          break;
        }
        if (bytesRead < n) frame.shrink(bytesRead);
        offset += bytesRead;
        size -= bytesRead;
        if (size === 0) {
          final = frame;
          break;
        }
        // A closed stream is noticed at the top of the loop.
        messages++;
        await writeWithDrain(down, frame.bytes(), () => undefined).catch(() => undefined);
      }
      if (final) messages++;
      const status = size > 0 ? { code: 11, message: `unexpected end of blob ${req.digest} at ${offset}`, messages } : { code: 0, message: "", messages };
      down.once("wantTrailers", () => {
        try {
          down.sendTrailers(status.code === 0 ? { "grpc-status": "0" } : { "grpc-status": String(status.code), "grpc-message": encodeStatusMessage(status.message) });
        } catch {
          /* the client is gone */
        }
      });
      if (!down.destroyed && !down.closed) {
        if (final) {
          const fr = final;
          // Back to the pool once written out ('finish' is not emitted for a stream cut short).
          down.once("finish", () => this.frames.give(fr));
          down.end(fr.bytes());
        } else down.end();
      } else if (final) this.frames.give(final);
      return status;
    } finally {
      this.release(f);
    }
  }

  close(): void {
    clearInterval(this.sweeper);
    for (const e of this.fds.values()) {
      e.closed = true;
      fs.close(e.fd, () => undefined);
    }
    this.fds.clear();
  }
}
