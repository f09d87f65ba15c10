/**
 * A streaming tar reader and a header writer, enough for OCI layers: ustar, PAX ('x' local records
 * including SCHILY.xattr.*, 'g' ignored) and GNU long names ('L', 'K'), numbers in octal or base-256.
 * The reader is push-based and synchronous: feed it chunks, it calls the handler as entries and
 * their data arrive. Malformed input throws TarError (the caller maps it to InvalidArgument).
 */

export class TarError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "TarError";
  }
}

export const TarTypes = {
  Reg: "0",
  RegA: "\0",
  Link: "1",
  Symlink: "2",
  Char: "3",
  Block: "4",
  Dir: "5",
  Fifo: "6",
  Cont: "7",
  PaxLocal: "x",
  PaxGlobal: "g",
  GnuLongName: "L",
  GnuLongLink: "K",
  GnuSparse: "S",
} as const;

export interface TarHeader {
  name: string;
  /** One of TarTypes (RegA and Cont are reported as Reg, old-style directories as Dir). */
  type: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  /** Seconds since the epoch, possibly fractional (PAX). */
  mtime: number;
  atime?: number;
  linkname: string;
  devmajor: number;
  devminor: number;
  xattrs: Map<string, Buffer>;
  /** GNU or PAX sparse entry (not supported by the applier). */
  sparse: boolean;
}

export interface TarHandler {
  entry(h: TarHeader): void;
  /** File data of the last entry (regular files only; other entries' data are skipped). */
  data(chunk: Buffer): void;
  /** The last entry's data is complete. */
  entryEnd(): void;
}

const BLOCK = 512;
/** Limits for metadata-only records (PAX headers, GNU long names), as Go's archive/tar. */
const MAX_SPECIAL = 1 << 20;
const MAX_NAME = 4096;

function cstr(b: Buffer, off: number, len: number): string {
  const s = b.subarray(off, off + len);
  const z = s.indexOf(0);
  return (z >= 0 ? s.subarray(0, z) : s).toString("utf8");
}

function parseNumber(b: Buffer, off: number, len: number, field: string): number {
  const s = b.subarray(off, off + len);
  if (s[0]! & 0x80) {
    if (s[0] === 0xff) throw new TarError(`negative base-256 ${field}`);
    let v = s[0]! & 0x7f;
    for (let i = 1; i < s.length; i++) {
      v = v * 256 + s[i]!;
      if (v > Number.MAX_SAFE_INTEGER) throw new TarError(`${field} out of range`);
    }
    return v;
  }
  const t = s.toString("latin1").replace(/\0.*$/s, "").trim();
  if (t === "") return 0;
  if (!/^[0-7]+$/.test(t)) throw new TarError(`invalid octal ${field} ${JSON.stringify(t)}`);
  const v = parseInt(t, 8);
  if (!Number.isSafeInteger(v)) throw new TarError(`${field} out of range`);
  return v;
}

function checksumOk(b: Buffer): boolean {
  const want = parseNumber(b, 148, 8, "checksum");
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const c = i >= 148 && i < 156 ? 0x20 : b[i]!;
    unsigned += c;
    signed += c > 127 ? c - 256 : c;
  }
  return want === unsigned || want === signed;
}

function parsePax(data: Buffer): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  let i = 0;
  while (i < data.length) {
    if (data[i] === 0) break;
    const sp = data.indexOf(0x20, i);
    if (sp < 0) throw new TarError("invalid PAX record");
    const len = Number(data.subarray(i, sp).toString("latin1"));
    if (!Number.isSafeInteger(len) || len <= sp - i + 1 || i + len > data.length || data[i + len - 1] !== 0x0a) throw new TarError("invalid PAX record length");
    const rec = data.subarray(sp + 1, i + len - 1);
    const eq = rec.indexOf(0x3d);
    if (eq <= 0) throw new TarError("invalid PAX record");
    out.set(rec.subarray(0, eq).toString("utf8"), Buffer.from(rec.subarray(eq + 1)));
    i += len;
  }
  return out;
}

function paxNumber(v: Buffer, key: string): number {
  const s = v.toString("latin1");
  if (!/^-?[0-9]+(\.[0-9]+)?$/.test(s)) throw new TarError(`invalid PAX ${key} ${JSON.stringify(s)}`);
  const n = Number(s);
  if (!Number.isFinite(n)) throw new TarError(`invalid PAX ${key}`);
  return n;
}

type State = "header" | "data" | "special" | "end";

export class TarReader {
  private state: State = "header";
  private hdrBuf = Buffer.alloc(BLOCK);
  private hdrFill = 0;
  private remaining = 0;
  private padding = 0;
  private emitData = false;
  private zeroBlocks = 0;
  private special?: { kind: string; buf: Buffer; fill: number };
  private pax?: Map<string, Buffer>;
  private longName?: string;
  private longLink?: string;
  /** Bytes after the end-of-archive marker (they are hashed by the caller but otherwise ignored). */
  trailing = 0;

  constructor(private readonly h: TarHandler) {}

  get ended(): boolean {
    return this.state === "end";
  }

  write(chunk: Buffer): void {
    let off = 0;
    while (off < chunk.length) {
      switch (this.state) {
        case "end":
          this.trailing += chunk.length - off;
          return;
        case "header": {
          if (this.padding > 0) {
            const n = Math.min(this.padding, chunk.length - off);
            this.padding -= n;
            off += n;
            continue;
          }
          if (this.hdrFill === 0 && chunk.length - off >= BLOCK) {
            this.header(chunk.subarray(off, off + BLOCK));
            off += BLOCK;
            continue;
          }
          const n = Math.min(BLOCK - this.hdrFill, chunk.length - off);
          chunk.copy(this.hdrBuf, this.hdrFill, off, off + n);
          this.hdrFill += n;
          off += n;
          if (this.hdrFill === BLOCK) {
            this.hdrFill = 0;
            this.header(this.hdrBuf);
          }
          continue;
        }
        case "data": {
          const n = Math.min(this.remaining, chunk.length - off);
          if (n > 0) {
            if (this.emitData) this.h.data(chunk.subarray(off, off + n));
            this.remaining -= n;
            off += n;
          }
          if (this.remaining === 0) this.finishData();
          continue;
        }
        case "special": {
          const sp = this.special!;
          const n = Math.min(this.remaining, chunk.length - off);
          chunk.copy(sp.buf, sp.fill, off, off + n);
          sp.fill += n;
          this.remaining -= n;
          off += n;
          if (this.remaining === 0) this.finishSpecial();
          continue;
        }
      }
    }
  }

  /** The input is complete: throws when the archive is truncated. */
  end(): void {
    if (this.state === "end") return;
    if (this.state === "header" && this.hdrFill === 0 && this.padding === 0 && !this.pax && this.longName === undefined && this.longLink === undefined) {
      this.state = "end"; // EOF at a header boundary (with or without a partial end marker)
      return;
    }
    throw new TarError("unexpected EOF in tar archive");
  }

  private finishData(): void {
    if (this.emitData) this.h.entryEnd();
    this.state = "header";
  }

  private finishSpecial(): void {
    const sp = this.special!;
    this.special = undefined;
    this.state = "header";
    switch (sp.kind) {
      case TarTypes.PaxLocal:
        this.pax = new Map([...(this.pax ?? []), ...parsePax(sp.buf)]);
        break;
      case TarTypes.PaxGlobal:
        parsePax(sp.buf);
        break;
      case TarTypes.GnuLongName:
        this.longName = cstr(sp.buf, 0, sp.buf.length);
        break;
      case TarTypes.GnuLongLink:
        this.longLink = cstr(sp.buf, 0, sp.buf.length);
        break;
    }
  }

  private header(b: Buffer): void {
    if (b.every((x) => x === 0)) {
      if (++this.zeroBlocks >= 2) this.state = "end";
      return;
    }
    if (this.zeroBlocks > 0) throw new TarError("invalid tar header after a zero block");
    if (!checksumOk(b)) throw new TarError("invalid tar header checksum");
    const magic = b.subarray(257, 263).toString("latin1");
    const ustar = magic === "ustar\0";
    let name = cstr(b, 0, 100);
    if (ustar) {
      const prefix = cstr(b, 345, 155);
      if (prefix) name = `${prefix}/${name}`;
    }
    let type = String.fromCharCode(b[156]!);
    const size = parseNumber(b, 124, 12, "size");
    const padded = Math.ceil(size / BLOCK) * BLOCK;
    if (type === TarTypes.PaxLocal || type === TarTypes.PaxGlobal || type === TarTypes.GnuLongName || type === TarTypes.GnuLongLink) {
      if (size > MAX_SPECIAL) throw new TarError(`${type} header of ${size} bytes exceeds the limit`);
      this.special = { kind: type, buf: Buffer.alloc(size), fill: 0 };
      this.remaining = size;
      this.padding = padded - size;
      this.state = "special";
      if (size === 0) this.finishSpecial();
      return;
    }
    const h: TarHeader = {
      name,
      type,
      mode: parseNumber(b, 100, 8, "mode"),
      uid: parseNumber(b, 108, 8, "uid"),
      gid: parseNumber(b, 116, 8, "gid"),
      size,
      mtime: parseNumber(b, 136, 12, "mtime"),
      linkname: cstr(b, 157, 100),
      devmajor: ustar || magic === "ustar " ? parseNumber(b, 329, 8, "devmajor") : 0,
      devminor: ustar || magic === "ustar " ? parseNumber(b, 337, 8, "devminor") : 0,
      xattrs: new Map(),
      sparse: type === TarTypes.GnuSparse,
    };
    if (this.longName !== undefined) h.name = this.longName;
    if (this.longLink !== undefined) h.linkname = this.longLink;
    const pax = this.pax;
    this.pax = undefined;
    this.longName = undefined;
    this.longLink = undefined;
    if (pax) {
      for (const [k, v] of pax) {
        switch (k) {
          case "path": h.name = v.toString("utf8"); break;
          case "linkpath": h.linkname = v.toString("utf8"); break;
          case "size": h.size = paxNumber(v, k); break;
          case "uid": h.uid = paxNumber(v, k); break;
          case "gid": h.gid = paxNumber(v, k); break;
          case "mtime": h.mtime = paxNumber(v, k); break;
          case "atime": h.atime = paxNumber(v, k); break;
          default:
            if (k.startsWith("SCHILY.xattr.")) h.xattrs.set(k.slice("SCHILY.xattr.".length), v);
            else if (k.startsWith("GNU.sparse.")) h.sparse = true;
        }
      }
      if (!Number.isSafeInteger(h.size) || h.size < 0) throw new TarError("invalid PAX size");
    }
    if (h.name.length > MAX_NAME || h.linkname.length > MAX_NAME) throw new TarError("name too long");
    if (type === TarTypes.RegA || type === TarTypes.Cont) type = h.name.endsWith("/") && type === TarTypes.RegA ? TarTypes.Dir : TarTypes.Reg;
    h.type = type;
    const dataSize = h.size;
    this.h.entry(h);
    this.remaining = dataSize;
    this.padding = Math.ceil(dataSize / BLOCK) * BLOCK - dataSize;
    this.emitData = type === TarTypes.Reg;
    this.state = "data";
    if (dataSize === 0) this.finishData();
  }
}

// ---------------------------------------------------------------------------------------------
// Writer

export interface TarWriteHeader {
  name: string;
  type: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  linkname?: string;
  devmajor?: number;
  devminor?: number;
  xattrs?: Map<string, Buffer>;
}

function writeString(b: Buffer, off: number, len: number, s: string): boolean {
  const bytes = Buffer.from(s, "utf8");
  if (bytes.length > len) return false;
  bytes.copy(b, off);
  return true;
}

function fitsOctal(v: number, len: number): boolean {
  return v >= 0 && v < 8 ** (len - 1);
}

function writeOctal(b: Buffer, off: number, len: number, v: number): void {
  const s = Math.floor(v).toString(8).padStart(len - 1, "0");
  b.write(s + "\0", off, len, "latin1");
}

function paxRecord(key: string, value: Buffer): Buffer {
  const body = Buffer.concat([Buffer.from(` ${key}=`, "utf8"), value, Buffer.from("\n")]);
  let len = body.length + 1;
  for (;;) {
    const n = String(len).length + body.length;
    if (n === len) break;
    len = n;
  }
  return Buffer.concat([Buffer.from(String(len), "latin1"), body]);
}

function rawHeader(h: TarWriteHeader, name: string, linkname: string): Buffer {
  const b = Buffer.alloc(BLOCK);
  writeString(b, 0, 100, name);
  writeOctal(b, 100, 8, h.mode & 0o7777777);
  writeOctal(b, 108, 8, fitsOctal(h.uid, 8) ? h.uid : 0);
  writeOctal(b, 116, 8, fitsOctal(h.gid, 8) ? h.gid : 0);
  writeOctal(b, 124, 12, fitsOctal(h.size, 12) ? h.size : 0);
  writeOctal(b, 136, 12, fitsOctal(h.mtime, 12) ? h.mtime : 0);
  b[156] = h.type.charCodeAt(0);
  writeString(b, 157, 100, linkname);
  b.write("ustar\0" + "00", 257, 8, "latin1");
  writeOctal(b, 329, 8, h.devmajor ?? 0);
  writeOctal(b, 337, 8, h.devminor ?? 0);
  b.fill(0x20, 148, 156);
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += b[i]!;
  b.write(sum.toString(8).padStart(6, "0") + "\0 ", 148, 8, "latin1");
  return b;
}

/** The header block(s) for an entry: a PAX header first when a field doesn't fit ustar. */
export function tarHeader(h: TarWriteHeader): Buffer {
  const recs: Buffer[] = [];
  let name = h.name;
  const linkname = h.linkname ?? "";
  let usedName = name;
  let usedLink = linkname;
  if (Buffer.byteLength(name) > 100 || !/^[\x20-\x7e]*$/.test(name)) {
    recs.push(paxRecord("path", Buffer.from(name, "utf8")));
    usedName = Buffer.from(name, "utf8").subarray(0, 99).toString("latin1").replace(/[^\x20-\x7e]/g, "_");
  }
  if (Buffer.byteLength(linkname) > 100 || !/^[\x20-\x7e]*$/.test(linkname)) {
    recs.push(paxRecord("linkpath", Buffer.from(linkname, "utf8")));
    usedLink = "";
  }
  if (!fitsOctal(h.uid, 8)) recs.push(paxRecord("uid", Buffer.from(String(h.uid))));
  if (!fitsOctal(h.gid, 8)) recs.push(paxRecord("gid", Buffer.from(String(h.gid))));
  if (!fitsOctal(h.size, 12)) recs.push(paxRecord("size", Buffer.from(String(h.size))));
  if (!fitsOctal(h.mtime, 12)) recs.push(paxRecord("mtime", Buffer.from(String(Math.floor(h.mtime)))));
  for (const [k, v] of h.xattrs ?? []) recs.push(paxRecord(`SCHILY.xattr.${k}`, v));
  const main = rawHeader(h, usedName, usedLink);
  if (recs.length === 0) return main;
  const data = Buffer.concat(recs);
  name = `PaxHeaders.0/${h.name.split("/").filter(Boolean).pop() ?? "x"}`.slice(0, 99);
  const paxHdr = rawHeader({ name, type: TarTypes.PaxLocal, mode: 0o644, uid: 0, gid: 0, size: data.length, mtime: 0 }, name, "");
  return Buffer.concat([paxHdr, data, Buffer.alloc(Math.ceil(data.length / BLOCK) * BLOCK - data.length), main]);
}

/** Zero padding after `size` bytes of entry data. */
export function tarPadding(size: number): Buffer {
  return Buffer.alloc(Math.ceil(size / BLOCK) * BLOCK - size);
}

/** The end-of-archive marker. */
export function tarEnd(): Buffer {
  return Buffer.alloc(BLOCK * 2);
}
