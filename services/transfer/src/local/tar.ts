/**
 * Streaming tar: a reader (ustar, PAX `x`/`g` records, GNU long names) that hands out each entry's
 * body as a stream, and a writer of ustar headers with PAX records for long names. Archives are never
 * held whole in memory.
 */

export type TarType = "file" | "directory" | "symlink" | "hardlink" | "other";

export interface TarHeader {
  name: string;
  size: number;
  type: TarType;
  mode?: number;
  linkname?: string;
  /** Seconds since the epoch. */
  mtime?: number;
  uid?: number;
  gid?: number;
}

export class TarFormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "TarFormatError";
  }
}

const BLOCK = 512;

/** Reads exact byte counts from an async iterable of chunks. */
export class ByteSource {
  private buf: Buffer = Buffer.alloc(0);
  private readonly it: AsyncIterator<Buffer | Uint8Array>;
  private ended = false;
  /** Bytes consumed so far. */
  position = 0;

  constructor(src: AsyncIterable<Buffer | Uint8Array>) {
    this.it = src[Symbol.asyncIterator]();
  }

  private async more(): Promise<boolean> {
    if (this.ended) return false;
    const r = await this.it.next();
    if (r.done) {
      this.ended = true;
      return false;
    }
    const c = Buffer.isBuffer(r.value) ? r.value : Buffer.from(r.value);
    this.buf = this.buf.length ? Buffer.concat([this.buf, c]) : c;
    return true;
  }

  /** Exactly `n` bytes, or fewer only at the end of the input. */
  async read(n: number): Promise<Buffer> {
    while (this.buf.length < n && (await this.more()));
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(out.length);
    this.position += out.length;
    return out;
  }

  /** The next `n` bytes as chunks; throws when the input ends first. */
  async *chunks(n: number): AsyncGenerator<Buffer> {
    let left = n;
    while (left > 0) {
      if (!this.buf.length && !(await this.more())) throw new TarFormatError(`unexpected end of archive (${left} bytes missing)`);
      const take = this.buf.subarray(0, Math.min(left, this.buf.length));
      this.buf = this.buf.subarray(take.length);
      this.position += take.length;
      left -= take.length;
      yield take;
    }
  }

  async skip(n: number): Promise<void> {
    for await (const _ of this.chunks(n)) void _;
  }
}

function str(b: Buffer, off: number, len: number): string {
  const s = b.subarray(off, off + len);
  const z = s.indexOf(0);
  return s.subarray(0, z < 0 ? s.length : z).toString("utf8");
}

function num(b: Buffer, off: number, len: number): number {
  const f = b.subarray(off, off + len);
  if (f[0]! & 0x80) {
    // base-256 (GNU) for large values
    let v = 0;
    for (let i = 1; i < f.length; i++) v = v * 256 + f[i]!;
    return v;
  }
  const s = str(b, off, len).trim();
  return s ? parseInt(s, 8) : 0;
}

function checksumOk(h: Buffer): boolean {
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 32 : h[i]!;
  return sum === num(h, 148, 8);
}

function parsePax(b: Buffer): Record<string, string> {
  const out: Record<string, string> = {};
  let i = 0;
  while (i < b.length) {
    const sp = b.indexOf(0x20, i);
    if (sp < 0) break;
    const len = parseInt(b.subarray(i, sp).toString("ascii"), 10);
    if (!(len > 0)) break;
    const rec = b.subarray(sp + 1, i + len - 1).toString("utf8");
    const eq = rec.indexOf("=");
    if (eq > 0) out[rec.slice(0, eq)] = rec.slice(eq + 1);
    i += len;
  }
  return out;
}

const TYPES: Record<string, TarType> = { "0": "file", "\0": "file", "7": "file", "5": "directory", "2": "symlink", "1": "hardlink" };

export interface TarEntry {
  header: TarHeader;
  body: AsyncGenerator<Buffer>;
}

/** The entries of a tar stream; an entry's body must be consumed (or is skipped) before the next. */
export async function* readTar(src: AsyncIterable<Buffer | Uint8Array>): AsyncGenerator<TarEntry> {
  const in_ = new ByteSource(src);
  let pax: Record<string, string> = {};
  let global: Record<string, string> = {};
  let longName: string | undefined;
  let longLink: string | undefined;
  for (;;) {
    const h = await in_.read(BLOCK);
    if (h.length === 0) return;
    if (h.length < BLOCK) throw new TarFormatError("truncated tar header");
    if (h.every((x) => x === 0)) return;
    if (!checksumOk(h)) throw new TarFormatError(`invalid tar header checksum at offset ${in_.position - BLOCK}`);
    const flag = String.fromCharCode(h[156]!);
    let size = num(h, 124, 12);
    const padded = Math.ceil(size / BLOCK) * BLOCK;
    if (flag === "x" || flag === "g" || flag === "L" || flag === "K") {
      if (size > 1 << 20) throw new TarFormatError("tar extension record too large");
      const data = await in_.read(padded);
      if (data.length < padded) throw new TarFormatError("truncated tar extension record");
      const body = data.subarray(0, size);
      if (flag === "x") pax = { ...pax, ...parsePax(body) };
      else if (flag === "g") global = { ...global, ...parsePax(body) };
      else if (flag === "L") longName = str(body, 0, body.length);
      else longLink = str(body, 0, body.length);
      continue;
    }
    const attrs = { ...global, ...pax };
    const prefix = h.subarray(257, 263).toString("latin1").startsWith("ustar") ? str(h, 345, 155) : "";
    let name: string = attrs.path ?? longName ?? (prefix ? `${prefix}/${str(h, 0, 100)}` : str(h, 0, 100));
    if (attrs.size !== undefined) size = Number(attrs.size);
    const header: TarHeader = {
      name,
      size,
      type: TYPES[flag] ?? "other",
      mode: num(h, 100, 8),
      uid: num(h, 108, 8),
      gid: num(h, 116, 8),
      mtime: attrs.mtime !== undefined ? Math.floor(Number(attrs.mtime)) : num(h, 136, 12),
      linkname: attrs.linkpath ?? longLink ?? str(h, 157, 100),
    };
    if (header.type === "directory" && !name.endsWith("/")) header.name = name = `${name}/`;
    pax = {};
    longName = undefined;
    longLink = undefined;
    const dataLen = header.type === "file" || header.type === "other" ? size : 0;
    const pad = Math.ceil(dataLen / BLOCK) * BLOCK - dataLen;
    let consumed = 0;
    const body = (async function* (): AsyncGenerator<Buffer> {
      for await (const c of in_.chunks(dataLen)) {
        consumed += c.length;
        yield c;
      }
    })();
    yield { header, body };
    // Skip what the consumer left, then the padding.
    for await (const c of body) consumed += 0 * c.length;
    if (consumed < dataLen) await in_.skip(dataLen - consumed);
    if (pad) await in_.skip(pad);
  }
}

function writeStr(b: Buffer, off: number, len: number, s: string): void {
  b.write(s, off, len, "utf8");
}

function writeOctal(b: Buffer, off: number, len: number, v: number): void {
  const s = Math.max(0, Math.floor(v)).toString(8);
  if (s.length > len - 1) {
    // base-256 for values that do not fit
    b[off] = 0x80;
    let x = Math.floor(v);
    for (let i = off + len - 1; i > off; i--) {
      b[i] = x % 256;
      x = Math.floor(x / 256);
    }
    return;
  }
  b.write(s.padStart(len - 1, "0") + "\0", off, len, "ascii");
}

function rawHeader(name: string, size: number, flag: string, h: Partial<TarHeader>): Buffer {
  const b = Buffer.alloc(BLOCK);
  writeStr(b, 0, 100, name);
  writeOctal(b, 100, 8, h.mode ?? (flag === "5" ? 0o755 : 0o644));
  writeOctal(b, 108, 8, h.uid ?? 0);
  writeOctal(b, 116, 8, h.gid ?? 0);
  writeOctal(b, 124, 12, size);
  writeOctal(b, 136, 12, h.mtime ?? 0);
  b.write("        ", 148, 8, "ascii");
  b.write(flag, 156, 1, "ascii");
  writeStr(b, 157, 100, h.linkname ?? "");
  b.write("ustar\u000000", 257, 8, "latin1");
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += b[i]!;
  b.write(sum.toString(8).padStart(6, "0") + "\0 ", 148, 8, "ascii");
  return b;
}

function paxRecord(key: string, value: string): string {
  const body = ` ${key}=${value}\n`;
  let len = Buffer.byteLength(body);
  len += String(len).length;
  if (String(len).length !== String(len - String(len).length).length) len++;
  return `${len}${body}`;
}

const FLAGS: Record<TarType, string> = { file: "0", directory: "5", symlink: "2", hardlink: "1", other: "0" };

/** The header block(s) for an entry: a PAX record first when the name or link does not fit ustar. */
export function tarHeader(h: TarHeader): Buffer {
  const flag = FLAGS[h.type];
  const recs: string[] = [];
  const nameBytes = Buffer.byteLength(h.name);
  if (nameBytes > 100) recs.push(paxRecord("path", h.name));
  if (h.linkname && Buffer.byteLength(h.linkname) > 100) recs.push(paxRecord("linkpath", h.linkname));
  const main = rawHeader(nameBytes > 100 ? h.name.slice(0, 99) : h.name, h.type === "file" ? h.size : 0, flag, h);
  if (!recs.length) return main;
  const data = Buffer.from(recs.join(""));
  return Buffer.concat([rawHeader(`PaxHeaders/${h.name.slice(0, 80)}`, data.length, "x", {}), data, tarPadding(data.length), main]);
}

export function tarPadding(size: number): Buffer {
  const r = size % BLOCK;
  return r ? Buffer.alloc(BLOCK - r) : Buffer.alloc(0);
}

/** The two zero blocks that end an archive. */
export const TAR_END = Buffer.alloc(2 * BLOCK);

/** A whole small file entry (header, data, padding). */
export function tarFile(name: string, data: Buffer, h: Partial<TarHeader> = {}): Buffer {
  return Buffer.concat([tarHeader({ name, size: data.length, type: "file", ...h }), data, tarPadding(data.length)]);
}
