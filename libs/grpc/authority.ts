/**
 * Clients that put a unix socket's path in `:authority` (the kubelet, crictl and other grpc-go clients
 * dialled with a bare socket path) are refused by Node's HTTP/2 server: nghttp2 checks the value
 * against RFC 3986's authority characters and resets the stream (PROTOCOL_ERROR) on the `/`.
 * containerd's Go server reads no authority, so those clients work against it.
 *
 * `acceptUnixConnections` sits between a unix socket listener and the HTTP/2 server: it reads the
 * client's first header block; when every `:authority` in it is valid (ctr, Flotilla's own clients)
 * the socket goes to the server as it is, with the bytes already read put back. Otherwise the client's
 * side of the connection is passed through a rewriter for the rest of its life: each `:authority`
 * value literal is replaced by one of the same length (characters outside the allowed set become `_`),
 * so the HPACK dynamic tables of the client's encoder and the server's decoder stay in step (an entry's
 * size counts the decoded length). Every other byte passes unchanged.
 */
import { Duplex } from "node:stream";
import type * as net from "node:net";

const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
const FRAME_HEADER = 9;
const HEADERS = 0x1;
const CONTINUATION = 0x9;
const END_HEADERS = 0x4;
const PADDED = 0x8;
const PRIORITY = 0x20;
/** How much a connection may send before its first header block is complete; past it, it is passed on as is. */
const PEEK_LIMIT = 256 * 1024;

/** RFC 7541's static table, names only (entry sizes count the name; values are never looked at here). */
const STATIC_NAMES = [
  ":authority", ":method", ":method", ":path", ":path", ":scheme", ":scheme", ":status", ":status", ":status", ":status", ":status",
  ":status", ":status", "accept-charset", "accept-encoding", "accept-language", "accept-ranges", "accept", "access-control-allow-origin",
  "age", "allow", "authorization", "cache-control", "content-disposition", "content-encoding", "content-language", "content-length",
  "content-location", "content-range", "content-type", "cookie", "date", "etag", "expect", "expires", "from", "host", "if-match",
  "if-modified-since", "if-none-match", "if-range", "if-unmodified-since", "last-modified", "link", "location", "max-forwards",
  "proxy-authenticate", "proxy-authorization", "range", "referer", "refresh", "retry-after", "server", "set-cookie",
  "strict-transport-security", "transfer-encoding", "user-agent", "vary", "via", "www-authenticate",
];

/**
 * The HPACK Huffman code is canonical: each symbol's code follows from the code lengths alone (in order
 * of length, then symbol). One character per symbol 0..255: its length in bits, 'A' = 5. EOS is 30 bits.
 */
const HUFFMAN_LENGTHS =
  "ISXXXXXXXTZXXZXXXXXXXXZXXXXXXXXXBFFHIBDGFFDGDBBBAAABBBBBBBCDKBHFIBCCCCCCCCCCCCCCCCCCCCCCDCDIOIJBKABABABBBACCBBBABCBAABCCCCCKGJIXPRPPRRRSRSSSSSTSTTRSTSSSSQRSRSSTRQPRRSSQSRRTQRSSQQRQSRSSPRRRSRRSVVPORSRUVVVWWVTUOQVWWVWTQQVVXWWWPTPQRQQSRRUUTTVSVWVVWWWWWXWWWWWV";

/** Decoding tables: for each code length, code -> symbol. */
let huffman: Map<number, number>[] | undefined;
function huffmanTables(): Map<number, number>[] {
  if (huffman) return huffman;
  const lens = [...HUFFMAN_LENGTHS].map((c) => c.charCodeAt(0) - 65 + 5);
  const order = lens.map((l, s) => [l, s] as const).sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  const tables: Map<number, number>[] = Array.from({ length: 31 }, () => new Map());
  let code = 0;
  let prev = order[0]![0];
  order.forEach(([len, sym], i) => {
    if (i > 0) code = (code + 1) * 2 ** (len - prev);
    prev = len;
    tables[len]!.set(code, sym);
  });
  return (huffman = tables);
}

class HpackError extends Error {}

function huffmanDecode(b: Buffer): Buffer {
  const t = huffmanTables();
  const out: number[] = [];
  let code = 0;
  let len = 0;
  for (const byte of b) {
    for (let bit = 7; bit >= 0; bit--) {
      code = code * 2 + ((byte >> bit) & 1);
      len++;
      const sym = len >= 5 ? t[len]?.get(code) : undefined;
      if (sym !== undefined) {
        out.push(sym);
        code = 0;
        len = 0;
      } else if (len > 30) throw new HpackError("bad huffman code");
    }
  }
  return Buffer.from(out);
}

/** RFC 3986 authority characters as nghttp2 accepts them. */
const VALID_AUTHORITY = /^[A-Za-z0-9\-._~!$&'()*+,;=:@[\]%]*$/;
export const validAuthority = (v: string): boolean => VALID_AUTHORITY.test(v);
const fixAuthority = (v: Buffer): Buffer => Buffer.from(v.toString("latin1").replace(/[^A-Za-z0-9\-._~!$&'()*+,;=:@[\]%]/g, "_"), "latin1");

/** The decoder side of one connection's HPACK state (client to server): enough to find and rewrite `:authority`. */
export class AuthorityRewriter {
  private readonly dynamic: { name: string; size: number }[] = [];
  private dynSize = 0;
  private maxSize = 4096;
  /** True once a header block had an `:authority` that needed rewriting. */
  rewrote = false;

  private nameAt(index: number): string {
    if (index >= 1 && index <= STATIC_NAMES.length) return STATIC_NAMES[index - 1]!;
    const e = this.dynamic[index - STATIC_NAMES.length - 1];
    if (!e) throw new HpackError(`bad index ${index}`);
    return e.name;
  }

  private add(name: string, valueLen: number): void {
    const size = name.length + valueLen + 32;
    this.dynamic.unshift({ name, size });
    this.dynSize += size;
    this.evict();
  }

  private evict(): void {
    while (this.dynSize > this.maxSize && this.dynamic.length) this.dynSize -= this.dynamic.pop()!.size;
  }

  /** Rewrite one complete header block; returns it (the same buffer when nothing changed). */
  block(src: Buffer): Buffer {
    let pos = 0;
    const parts: Buffer[] = [];
    let changed = false;
    const int = (prefixBits: number): number => {
      if (pos >= src.length) throw new HpackError("truncated integer");
      const mask = (1 << prefixBits) - 1;
      let v = src[pos++]! & mask;
      if (v < mask) return v;
      let m = 0;
      for (;;) {
        if (pos >= src.length) throw new HpackError("truncated integer");
        const b = src[pos++]!;
        v += (b & 0x7f) * 2 ** m;
        m += 7;
        if (!(b & 0x80)) return v;
      }
    };
    const str = (): { value: Buffer; start: number } => {
      const start = pos;
      const huff = (src[pos]! & 0x80) !== 0;
      const len = int(7);
      if (pos + len > src.length) throw new HpackError("truncated string");
      const raw = src.subarray(pos, pos + len);
      pos += len;
      return { value: huff ? huffmanDecode(raw) : Buffer.from(raw), start };
    };
    while (pos < src.length) {
      const first = src[pos]!;
      const repStart = pos;
      if (first & 0x80) {
        int(7); // an indexed field: a table entry, rewritten when it was added
      } else if ((first & 0xe0) === 0x20) {
        this.maxSize = int(5);
        this.evict();
      } else {
        const incremental = (first & 0xc0) === 0x40;
        const index = int(incremental ? 6 : 4);
        const name = index ? this.nameAt(index) : str().value.toString("latin1");
        const v = str();
        if (incremental) this.add(name, v.value.length);
        if (name === ":authority" && !validAuthority(v.value.toString("latin1"))) {
          parts.push(src.subarray(repStart, v.start), encodeString(fixAuthority(v.value)));
          this.rewrote = changed = true;
          continue;
        }
      }
      parts.push(src.subarray(repStart, pos));
    }
    return changed ? Buffer.concat(parts) : src;
  }
}

/** A plain (not Huffman-coded) HPACK string literal: a 7-bit-prefix length, then the bytes. */
function encodeString(b: Buffer): Buffer {
  const head: number[] = [];
  if (b.length < 127) head.push(b.length);
  else {
    head.push(127);
    let v = b.length - 127;
    while (v >= 128) {
      head.push((v % 128) | 0x80);
      v = Math.floor(v / 128);
    }
    head.push(v);
  }
  return Buffer.concat([Buffer.from(head), b]);
}

const frameHeader = (len: number, type: number, flags: number, streamId: number): Buffer => {
  const h = Buffer.alloc(FRAME_HEADER);
  h.writeUIntBE(len, 0, 3);
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(streamId, 5);
  return h;
};
const SETTINGS = 0x4;
const ACK = 0x1;
/** Header blocks are re-framed in pieces no larger than HTTP/2's smallest maximum frame size. */
const MAX_OUT_FRAME = 16384;

/**
 * The client's side of one connection, frame by frame: header blocks (HEADERS and their CONTINUATIONs)
 * go through the HPACK rewriter and come out as one HEADERS frame (more when large), everything else
 * passes as is. Optionally drops the client's first SETTINGS ACK (the answer to a SETTINGS frame sent
 * on the server's behalf, see acceptUnixConnections).
 */
export class ClientFrames {
  readonly hpack = new AuthorityRewriter();
  /** Complete header blocks seen. */
  blocks = 0;
  private rest: Buffer = Buffer.alloc(0);
  private prefaceLeft = PREFACE.length;
  private passLeft = 0;
  private pending: { streamId: number; flags: number; priority: Buffer; fragments: Buffer[] } | undefined;
  /** Set once the HPACK state is lost (a malformed block): from then on everything passes as is. */
  private raw = false;

  constructor(public dropFirstAck: boolean) {}

  push(chunk: Buffer): Buffer[] {
    const out: Buffer[] = [];
    let d = this.rest.length ? Buffer.concat([this.rest, chunk]) : chunk;
    this.rest = Buffer.alloc(0);
    while (d.length) {
      if (this.raw) {
        out.push(d);
        break;
      }
      if (this.prefaceLeft || this.passLeft) {
        const n = Math.min(this.prefaceLeft || this.passLeft, d.length);
        out.push(d.subarray(0, n));
        if (this.prefaceLeft) this.prefaceLeft -= n;
        else this.passLeft -= n;
        d = d.subarray(n);
        continue;
      }
      if (d.length < FRAME_HEADER) {
        this.rest = Buffer.from(d);
        break;
      }
      const len = d.readUIntBE(0, 3);
      const type = d[3]!;
      const flags = d[4]!;
      const streamId = d.readUInt32BE(5) & 0x7fffffff;
      if (type === SETTINGS && flags & ACK && this.dropFirstAck && len === 0) {
        this.dropFirstAck = false;
        d = d.subarray(FRAME_HEADER);
        continue;
      }
      if (type !== HEADERS && (type !== CONTINUATION || !this.pending)) {
        out.push(d.subarray(0, FRAME_HEADER));
        this.passLeft = len;
        d = d.subarray(FRAME_HEADER);
        continue;
      }
      if (d.length < FRAME_HEADER + len) {
        this.rest = Buffer.from(d);
        break;
      }
      let payload = d.subarray(FRAME_HEADER, FRAME_HEADER + len);
      d = d.subarray(FRAME_HEADER + len);
      if (type === HEADERS) {
        let priority: Buffer = Buffer.alloc(0);
        if (flags & PADDED) payload = payload.subarray(1, payload.length - payload[0]!);
        if (flags & PRIORITY) {
          priority = payload.subarray(0, 5);
          payload = payload.subarray(5);
        }
        this.pending = { streamId, flags: flags & ~PADDED & ~END_HEADERS, priority, fragments: [payload] };
      } else this.pending!.fragments.push(payload);
      if (!(flags & END_HEADERS)) continue;
      const p = this.pending!;
      this.pending = undefined;
      this.blocks++;
      let block: Buffer;
      try {
        block = this.hpack.block(Buffer.concat(p.fragments));
      } catch {
        this.raw = true;
        block = Buffer.concat(p.fragments);
      }
      out.push(...headerFrames(p.streamId, p.flags, p.priority, block));
    }
    return out;
  }
}

/** A header block as HEADERS (with the priority fields, if any) and CONTINUATION frames. */
function headerFrames(streamId: number, flags: number, priority: Buffer, block: Buffer): Buffer[] {
  const out: Buffer[] = [];
  let first = true;
  let rest = block;
  do {
    const room = MAX_OUT_FRAME - (first ? priority.length : 0);
    const piece = rest.subarray(0, room);
    rest = rest.subarray(piece.length);
    const end = rest.length === 0 ? END_HEADERS : 0;
    if (first) out.push(frameHeader(priority.length + piece.length, HEADERS, flags | end, streamId), priority, piece);
    else out.push(frameHeader(piece.length, CONTINUATION, end, streamId), piece);
    first = false;
  } while (rest.length);
  return out;
}

/** Sockets still being looked at, per server (closeHttp2 ends them). */
const peeking = new WeakMap<object, Set<net.Socket>>();

/** End the connections `server` has not handed to its HTTP/2 session yet. */
export function destroyPeeking(server: object): void {
  for (const s of peeking.get(server) ?? []) s.destroy();
}

/**
 * Make `server` (an HTTP/2 server listening on a unix socket) accept clients whose `:authority` is a
 * socket path. Each connection is first read here: a SETTINGS frame is sent on the server's behalf (a
 * grpc-go client sends no request before it has one; the client's ACK of it is dropped), and once the
 * client's first header block and that ACK have arrived the connection goes to the HTTP/2 server: as
 * the socket itself when no `:authority` needed a change, else through a rewriting stream.
 */
export function acceptUnixConnections(server: net.Server): void {
  const handlers = server.listeners("connection") as ((s: Duplex) => void)[];
  server.removeAllListeners("connection");
  const handOver = (s: Duplex): void => {
    for (const h of handlers) h.call(server, s);
  };
  const pending = new Set<net.Socket>();
  peeking.set(server, pending);
  server.on("connection", (c: net.Socket) => {
    pending.add(c);
    const frames = new ClientFrames(true);
    const out: Buffer[] = [];
    let total = 0;
    const done = (): void => {
      c.off("data", onData);
      c.off("close", onClose);
      pending.delete(c);
      c.pause();
      if (!frames.hpack.rewrote) {
        c.unshift(Buffer.concat(out));
        handOver(c);
        return;
      }
      handOver(rewritingStream(c, frames, out));
    };
    const onData = (d: Buffer): void => {
      total += d.length;
      out.push(...frames.push(d));
      if ((frames.blocks > 0 && !frames.dropFirstAck) || total > PEEK_LIMIT) done();
    };
    const onClose = (): void => {
      pending.delete(c);
    };
    c.on("data", onData);
    c.on("close", onClose);
    c.on("error", () => c.destroy());
    c.write(frameHeader(0, SETTINGS, 0, 0));
  });
}

/** The connection as the HTTP/2 server sees it: the client's bytes through `frames`, the server's as they are. */
function rewritingStream(c: net.Socket, frames: ClientFrames, first: Buffer[]): Duplex {
  const d = new Duplex({
    read() {
      c.resume();
    },
    write(chunk: Buffer, _enc, cb) {
      c.write(chunk, cb);
    },
    final(cb) {
      c.end();
      cb();
    },
    destroy(err, cb) {
      c.destroy(err ?? undefined);
      cb(err);
    },
  });
  for (const b of first) d.push(b);
  c.on("data", (chunk: Buffer) => {
    let ok = true;
    for (const b of frames.push(chunk)) ok = d.push(b) && ok;
    if (!ok) c.pause();
  });
  c.on("end", () => d.push(null));
  c.on("close", () => d.destroy());
  return d;
}
