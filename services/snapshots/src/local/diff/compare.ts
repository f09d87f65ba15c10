/**
 * The walking differ's core: a double walk of two directory trees (lower, upper), emitting the OCI
 * layer tar that turns lower into upper: added and modified entries (with their parent directories
 * first), `.wh.<name>` whiteouts for deletions, hard links kept as links. Files count as unchanged
 * when type, mode, owner, device, size, mtime, symlink target and xattrs match (and, when both mtimes
 * have no sub-second part, the contents too), as continuity's fs.Changes decides.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { TarTypes, tarEnd, tarHeader, tarPadding, type TarWriteHeader } from "./tar";
import * as sys from "#libs/sys/linux";

export type Sink = (chunk: Buffer) => Promise<void>;

interface Entry {
  st: fs.BigIntStats;
  abs: string;
}

const SKIP_XATTRS = (k: string): boolean => k.startsWith("trusted.overlay.") || k === "security.selinux";

function lstat(p: string): fs.BigIntStats | undefined {
  try {
    return fs.lstatSync(p, { bigint: true, throwIfNoEntry: false });
  } catch (e) {
    const c = (e as NodeJS.ErrnoException).code;
    if (c === "ENOENT" || c === "ENOTDIR") return undefined;
    throw e;
  }
}

function xattrs(p: string): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  for (const k of sys.llistxattr(p)) {
    if (SKIP_XATTRS(k)) continue;
    const v = sys.lgetxattr(p, k);
    if (v) out.set(k, v);
  }
  return out;
}

function sameXattrs(a: string, b: string): boolean {
  const x = xattrs(a);
  const y = xattrs(b);
  if (x.size !== y.size) return false;
  for (const [k, v] of x) if (!y.get(k)?.equals(v)) return false;
  return true;
}

function sameContent(a: string, b: string): boolean {
  const fa = fs.openSync(a, "r");
  const fb = fs.openSync(b, "r");
  try {
    const ba = Buffer.alloc(64 * 1024);
    const bb = Buffer.alloc(64 * 1024);
    for (;;) {
      const na = fs.readSync(fa, ba);
      const nb = fs.readSync(fb, bb);
      if (na !== nb) return false;
      if (na === 0) return true;
      if (!ba.subarray(0, na).equals(bb.subarray(0, nb))) return false;
    }
  } finally {
    fs.closeSync(fa);
    fs.closeSync(fb);
  }
}

function sameFile(l: Entry, u: Entry): boolean {
  const a = l.st;
  const b = u.st;
  if (a.dev === b.dev && a.ino === b.ino) return true;
  if (a.mode !== b.mode || a.uid !== b.uid || a.gid !== b.gid || a.rdev !== b.rdev) return false;
  if (!sameXattrs(l.abs, u.abs)) return false;
  if (b.isDirectory()) return true;
  if (a.size !== b.size) return false;
  const sa = a.mtimeNs / 1_000_000_000n;
  const sb = b.mtimeNs / 1_000_000_000n;
  if (sa !== sb) return false;
  const na = a.mtimeNs % 1_000_000_000n;
  const nb = b.mtimeNs % 1_000_000_000n;
  if (b.isSymbolicLink()) return fs.readlinkSync(l.abs) === fs.readlinkSync(u.abs);
  if (na === 0n && nb === 0n) {
    if (b.size === 0n || !b.isFile()) return true;
    return sameContent(l.abs, u.abs);
  }
  return na === nb;
}

export interface WriteDiffOptions {
  /** Clamp timestamps to this many seconds since the epoch. */
  sourceDateEpoch?: number;
}

/** Write the tar of the changes from `lower` to `upper` to `sink`. */
export async function writeDiff(lower: string, upper: string, sink: Sink, opts: WriteDiffOptions = {}): Promise<void> {
  const emittedDirs = new Set<string>([""]);
  const links = new Map<string, string>();
  let pending: Buffer[] = [];
  let pendingLen = 0;
  const out = async (b: Buffer): Promise<void> => {
    pending.push(b);
    pendingLen += b.length;
    if (pendingLen >= 256 * 1024) await flush();
  };
  const flush = async (): Promise<void> => {
    if (!pendingLen) return;
    const b = Buffer.concat(pending);
    pending = [];
    pendingLen = 0;
    await sink(b);
  };
  const mtime = (st: fs.BigIntStats): number => {
    const t = Number(st.mtimeNs / 1_000_000_000n);
    return opts.sourceDateEpoch !== undefined && t > opts.sourceDateEpoch ? opts.sourceDateEpoch : t;
  };

  const header = (rel: string, e: Entry): TarWriteHeader => {
    const st = e.st;
    const h: TarWriteHeader = {
      name: rel, type: TarTypes.Reg, mode: Number(st.mode & 0o7777n), uid: Number(st.uid), gid: Number(st.gid), size: 0, mtime: mtime(st),
      xattrs: xattrs(e.abs),
    };
    if (st.isDirectory()) {
      h.type = TarTypes.Dir;
      h.name = rel + "/";
    } else if (st.isSymbolicLink()) {
      h.type = TarTypes.Symlink;
      h.linkname = fs.readlinkSync(e.abs);
    } else if (st.isCharacterDevice() || st.isBlockDevice()) {
      h.type = st.isCharacterDevice() ? TarTypes.Char : TarTypes.Block;
      h.devmajor = sys.devMajor(Number(st.rdev));
      h.devminor = sys.devMinor(Number(st.rdev));
    } else if (st.isFIFO()) {
      h.type = TarTypes.Fifo;
    } else if (st.isFile()) {
      h.size = Number(st.size);
    } else {
      return { ...h, type: "" };
    }
    return h;
  };

  const emitParents = async (rel: string): Promise<void> => {
    const parts = rel.split("/");
    for (let i = 1; i < parts.length; i++) {
      const d = parts.slice(0, i).join("/");
      if (emittedDirs.has(d)) continue;
      const abs = path.join(upper, d);
      const st = lstat(abs);
      if (st) await out(tarHeader(header(d, { st, abs })));
      emittedDirs.add(d);
    }
  };

  const emit = async (rel: string, e: Entry): Promise<void> => {
    await emitParents(rel);
    const h = header(rel, e);
    if (!h.type) return; // sockets and the like are not carried in layers
    if (e.st.isDirectory()) {
      if (emittedDirs.has(rel)) return;
      emittedDirs.add(rel);
    }
    if (e.st.isFile() && e.st.nlink > 1n) {
      const k = `${e.st.dev}:${e.st.ino}`;
      const first = links.get(k);
      if (first) {
        await out(tarHeader({ ...h, type: TarTypes.Link, size: 0, linkname: first }));
        return;
      }
      links.set(k, rel);
    }
    await out(tarHeader(h));
    if (h.type === TarTypes.Reg && h.size > 0) {
      await flush();
      const fd = fs.openSync(e.abs, "r");
      try {
        let left = h.size;
        while (left > 0) {
          const buf = Buffer.alloc(Math.min(left, 1 << 20));
          const n = fs.readSync(fd, buf, 0, buf.length, null);
          if (n === 0) {
            await sink(Buffer.alloc(left)); // file shrank while reading: pad to the declared size
            break;
          }
          left -= n;
          await sink(buf.subarray(0, n));
        }
      } finally {
        fs.closeSync(fd);
      }
      await out(tarPadding(h.size));
    }
  };

  const whiteout = async (rel: string): Promise<void> => {
    const dir = path.posix.dirname(rel);
    const name = `${dir === "." ? "" : dir + "/"}.wh.${path.posix.basename(rel)}`;
    await emitParents(name);
    const t = opts.sourceDateEpoch ?? 0;
    await out(tarHeader({ name, type: TarTypes.Reg, mode: 0, uid: 0, gid: 0, size: 0, mtime: t }));
  };

  const addTree = async (rel: string, abs: string): Promise<void> => {
    const st = lstat(abs);
    if (!st) return;
    await emit(rel, { st, abs });
    if (st.isDirectory()) {
      for (const n of fs.readdirSync(abs).sort()) await addTree(`${rel}/${n}`, path.join(abs, n));
    }
  };

  let visited = 0;
  const walk = async (rel: string): Promise<void> => {
    if (++visited % 512 === 0) await new Promise((r) => setImmediate(r));
    const la = rel ? path.join(lower, rel) : lower;
    const ua = rel ? path.join(upper, rel) : upper;
    const lnames = lstat(la)?.isDirectory() ? fs.readdirSync(la).sort() : [];
    const unames = fs.readdirSync(ua).sort();
    let i = 0;
    let j = 0;
    while (i < lnames.length || j < unames.length) {
      const ln = lnames[i];
      const un = unames[j];
      if (un === undefined || (ln !== undefined && ln < un)) {
        await whiteout(rel ? `${rel}/${ln}` : ln!);
        i++;
        continue;
      }
      const child = rel ? `${rel}/${un}` : un;
      const uabs = path.join(ua, un);
      if (ln === undefined || un < ln) {
        await addTree(child, uabs);
        j++;
        continue;
      }
      i++;
      j++;
      const labs = path.join(la, ln);
      const l = { st: lstat(labs)!, abs: labs };
      const u = { st: lstat(uabs)!, abs: uabs };
      if (!l.st || !u.st) continue;
      if (l.st.isDirectory() && u.st.isDirectory()) {
        if (!sameFile(l, u)) await emit(child, u);
        await walk(child);
      } else if (u.st.isDirectory()) {
        await addTree(child, uabs);
      } else if (!sameFile(l, u) || l.st.isDirectory()) {
        await emit(child, u);
      }
    }
  };
  await walk("");
  await out(tarEnd());
  await flush();
}
