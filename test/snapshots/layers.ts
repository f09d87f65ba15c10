/** Test helpers: build layer tars in memory, an in-memory content store, and a comparable view of a tree. */
import { createHash } from "node:crypto";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import * as zlib from "node:zlib";
import type { CallContext } from "#libs/context";
import { errNotFound } from "#libs/errdefs";
import { TarTypes, tarEnd, tarHeader, tarPadding } from "#services/snapshots/src/local/diff/tar";
import { blobFile, type BlobWriter, type LayerContent } from "#services/snapshots/src/local/diff/content";
import * as sys from "#libs/sys/linux";

export interface E {
  name: string;
  type?: string;
  data?: string | Buffer;
  mode?: number;
  uid?: number;
  gid?: number;
  mtime?: number;
  linkname?: string;
  devmajor?: number;
  devminor?: number;
  xattrs?: Record<string, string>;
}

export const dir = (name: string, mode = 0o755, extra: Partial<E> = {}): E => ({ name: name.endsWith("/") ? name : name + "/", type: TarTypes.Dir, mode, ...extra });
export const file = (name: string, data: string | Buffer, extra: Partial<E> = {}): E => ({ name, data, ...extra });
export const symlink = (name: string, target: string): E => ({ name, type: TarTypes.Symlink, linkname: target, mode: 0o777 });
export const hardlink = (name: string, target: string): E => ({ name, type: TarTypes.Link, linkname: target });
export const whiteout = (p: string): E => {
  const d = path.posix.dirname(p);
  return { name: `${d === "." ? "" : d + "/"}.wh.${path.posix.basename(p)}`, data: "" };
};
export const opaque = (d: string): E => ({ name: `${d}/.wh..wh..opq`, data: "" });

/** An uncompressed layer tar. */
export function tarOf(entries: E[]): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    const data = e.data === undefined ? Buffer.alloc(0) : Buffer.isBuffer(e.data) ? e.data : Buffer.from(e.data);
    const type = e.type ?? TarTypes.Reg;
    const size = type === TarTypes.Reg ? data.length : 0;
    parts.push(tarHeader({
      name: e.name, type, mode: e.mode ?? 0o644, uid: e.uid ?? 0, gid: e.gid ?? 0, size, mtime: e.mtime ?? 1700000000,
      linkname: e.linkname, devmajor: e.devmajor, devminor: e.devminor,
      xattrs: e.xattrs ? new Map(Object.entries(e.xattrs).map(([k, v]) => [k, Buffer.from(v)])) : undefined,
    }));
    if (size) parts.push(data, tarPadding(size));
  }
  parts.push(tarEnd());
  return Buffer.concat(parts);
}

export const sha256 = (b: Buffer): string => `sha256:${createHash("sha256").update(b).digest("hex")}`;
export const gzip = (b: Buffer): Buffer => zlib.gzipSync(b);

export function zstd(b: Buffer): Buffer {
  const r = spawnSync("zstd", ["-q", "-c", "-3"], { input: b, maxBuffer: 1 << 30 });
  if (r.status !== 0) throw new Error(`zstd failed: ${r.stderr}`);
  return r.stdout;
}

/**
 * Content kept in memory, implementing what the differ needs. With `fileRoot`, every added blob is
 * also written as a file in a content store layout there, and offered to the differ as a local file
 * (the co-located fast path); `blobs` stays the authority on what exists.
 */
export class MemContent implements LayerContent {
  readonly blobs = new Map<string, { data: Buffer; labels: Record<string, string> }>();

  constructor(readonly fileRoot?: string) {}

  add(data: Buffer): string {
    const d = sha256(data);
    this.blobs.set(d, { data, labels: {} });
    if (this.fileRoot) {
      const f = blobFile(this.fileRoot, d)!;
      fs.mkdirSync(path.dirname(f), { recursive: true });
      fs.writeFileSync(f, data);
    }
    return d;
  }

  async localFile(_ctx: CallContext, digest: string): Promise<string | undefined> {
    if (!this.blobs.has(digest)) throw errNotFound(`content digest ${digest}`);
    const f = this.fileRoot ? blobFile(this.fileRoot, digest) : undefined;
    return f && fs.existsSync(f) ? f : undefined;
  }

  async *read(_ctx: CallContext, digest: string): AsyncIterable<Buffer> {
    const b = this.blobs.get(digest);
    if (!b) throw errNotFound(`content digest ${digest}`);
    for (let i = 0; i < b.data.length; i += 1 << 20) yield b.data.subarray(i, i + (1 << 20));
  }

  async writer(): Promise<BlobWriter> {
    const parts: Buffer[] = [];
    return {
      write: async (d) => void parts.push(Buffer.from(d)),
      commit: async (size, digest, labels) => {
        const data = Buffer.concat(parts);
        if (data.length !== size || sha256(data) !== digest) throw new Error("mismatch");
        this.blobs.set(digest, { data, labels });
      },
      abort: async () => undefined,
    };
  }
}

/**
 * A comparable description of a tree: one line per entry with type, mode, owner, size, content
 * hash or link target, device numbers, user xattrs, mtime, and a hard-link group tag.
 */
export function describeTree(root: string, opts: { mtime?: boolean; skip?: (rel: string) => boolean } = {}): string[] {
  const out: string[] = [];
  const inodes = new Map<string, string>();
  const walk = (rel: string): void => {
    const abs = rel ? path.join(root, rel) : root;
    for (const n of fs.readdirSync(abs).sort()) {
      const r = rel ? `${rel}/${n}` : n;
      if (opts.skip?.(r)) continue;
      const p = path.join(root, r);
      const st = fs.lstatSync(p);
      const x = sys.llistxattr(p).filter((k) => k.startsWith("user.") || k.startsWith("trusted.overlay.opaque")).sort().map((k) => `${k}=${sys.lgetxattr(p, k)?.toString()}`).join(",");
      let what = "";
      if (st.isDirectory()) what = "dir";
      else if (st.isSymbolicLink()) what = `symlink->${fs.readlinkSync(p)}`;
      else if (st.isFile()) what = `file:${sha256(fs.readFileSync(p)).slice(7, 19)}`;
      else if (st.isCharacterDevice()) what = `char:${sys.devMajor(st.rdev)},${sys.devMinor(st.rdev)}`;
      else if (st.isBlockDevice()) what = `block:${sys.devMajor(st.rdev)},${sys.devMinor(st.rdev)}`;
      else if (st.isFIFO()) what = "fifo";
      let link = "";
      if (st.isFile() && st.nlink > 1) {
        const k = `${st.dev}:${st.ino}`;
        if (!inodes.has(k)) inodes.set(k, r);
        link = ` hardlink-group=${inodes.get(k)}`;
      }
      const mode = st.isSymbolicLink() ? "" : ` mode=${(st.mode & 0o7777).toString(8)}`;
      const mt = opts.mtime && !st.isDirectory() ? ` mtime=${Math.floor(st.mtimeMs / 1000)}` : "";
      out.push(`${r} ${what}${mode} uid=${st.uid} gid=${st.gid}${mt}${x ? ` xattrs=${x}` : ""}${link}`);
      if (st.isDirectory()) walk(r);
    }
  };
  walk("");
  return out;
}
