/**
 * Applying an OCI layer (a tar stream) to a directory, in two passes so that a hostile or broken
 * layer leaves the target untouched:
 *
 *  1. plan (while the layer streams in): every entry is validated and its path resolved against a
 *     simulation of the target (the target directory, overlay lower layers, and the entries seen so
 *     far); regular file data is written to a staging directory beside the target. Anything hostile
 *     (absolute or `..` names, writes through symlinks leading out of the root, hard links out of the
 *     root or to missing targets, bad whiteouts, forbidden devices, overlay-private xattrs, malformed
 *     tar) throws ApplyRefused and nothing but the staging directory was written.
 *  2. execute (after the caller verified the digest): the planned operations run in order with
 *     synchronous system calls: whiteouts (overlay: 0/0 character devices, opaque directories with
 *     trusted.overlay.opaque=y; native: real deletions), directories, staged files renamed into
 *     place, symlinks, hard links, device nodes and FIFOs; then owners, xattrs, modes and times
 *     (directory times last).
 *
 * Symlink policy: a symlink met while resolving the parent of an entry is followed only when its
 * target is relative and stays inside the root; an absolute target, or one that climbs above the root,
 * is a symlink escape and refuses the layer. Symlinks themselves may point anywhere.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { TarTypes, type TarHandler, type TarHeader } from "./tar";
import * as sys from "#libs/sys/linux";
import { writeAllSync } from "#libs/sys/pagecache";

export class ApplyRefused extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ApplyRefused";
  }
}

export interface ApplyTarget {
  /** The directory the layer is applied to (overlay upper dir, or the snapshot's own tree). */
  root: string;
  /** Overlay lower directories, nearest first (empty unless `overlay`). */
  lowers: string[];
  /** Write overlay-style whiteouts and opaque markers instead of deleting. */
  overlay: boolean;
}

export interface ApplyLimits {
  allowDevices: boolean;
}

const WHITEOUT_PREFIX = ".wh.";
const WHITEOUT_META_PREFIX = ".wh..wh.";
const WHITEOUT_OPAQUE = ".wh..wh..opq";
const OPAQUE_XATTR = "trusted.overlay.opaque";
const MAX_SYMLINK_HOPS = 40;

type Kind = "dir" | "file" | "symlink" | "other" | "absent";

interface SimNode {
  kind: Kind;
  target?: string;
  /** A directory whose children do not come from the filesystem (created fresh, or opaque). */
  fresh?: boolean;
  /** Exists in the target directory itself (not only in a lower layer). */
  inRoot?: boolean;
}

interface RealNode {
  kind: Kind;
  target?: string;
  /** For directories: indexes of the layers (0 = root, 1.. = lowers) whose directories merge here. */
  layers: number[];
}

type Op =
  /** A regular file: its bytes staged in a file (`staged`), or held in memory (`data`, in order). */
  | { t: "file"; rel: string; staged?: string; data?: Buffer[]; h: TarHeader }
  | { t: "dir"; rel: string; h: TarHeader; opaque: boolean }
  | { t: "symlink"; rel: string; h: TarHeader }
  | { t: "link"; rel: string; target: string; h: TarHeader }
  | { t: "node"; rel: string; h: TarHeader }
  | { t: "whiteout"; rel: string; h: TarHeader }
  | { t: "opaque"; rel: string };

function kindOf(st: fs.Stats): Kind {
  if (st.isDirectory()) return "dir";
  if (st.isSymbolicLink()) return "symlink";
  if (st.isFile()) return "file";
  return "other";
}

function isWhiteoutDevice(st: fs.Stats): boolean {
  return st.isCharacterDevice() && st.rdev === 0;
}

function lstatOrUndefined(p: string): fs.Stats | undefined {
  try {
    return fs.lstatSync(p, { throwIfNoEntry: false });
  } catch (e) {
    const c = (e as NodeJS.ErrnoException).code;
    if (c === "ENOENT" || c === "ENOTDIR") return undefined;
    throw e;
  }
}

/** Lexically clean a tar name into components; throws for absolute names and `..` escapes. */
export function cleanName(name: string, what = "path"): string[] {
  if (name.startsWith("/")) throw new ApplyRefused(`${what} ${JSON.stringify(name)} is absolute`);
  if (name.includes("\0")) throw new ApplyRefused(`${what} ${JSON.stringify(name)} contains NUL`);
  const out: string[] = [];
  for (const p of name.split("/")) {
    if (p === "" || p === ".") continue;
    if (p === "..") {
      if (out.length === 0) throw new ApplyRefused(`${what} ${JSON.stringify(name)} escapes the root (..)`);
      out.pop();
      continue;
    }
    out.push(p);
  }
  return out;
}

function clampTime(t: number): number {
  if (!Number.isFinite(t)) return 0;
  return Math.min(Math.max(t, 0), 253402300799);
}

export class ApplyPlan implements TarHandler {
  readonly ops: Op[] = [];
  private readonly sim = new Map<string, SimNode>();
  private readonly real = new Map<string, RealNode>();
  private readonly layers: string[];
  private fd = -1;
  private stagedCount = 0;
  private pendingFile?: { rel: string; staged?: string; data?: Buffer[]; h: TarHeader };
  /**
   * The whole layer is in memory and stays there until the plan is executed: file data is kept as
   * the reader's slices of it and written straight into place, with no staging copy.
   */
  inMemory = false;
  entries = 0;

  constructor(private readonly target: ApplyTarget, private readonly limits: ApplyLimits, private readonly staging: string) {
    this.layers = [target.root, ...(target.overlay ? target.lowers : [])];
  }

  // ---- simulation -------------------------------------------------------------------------

  private realNode(parts: string[]): RealNode {
    const key = parts.join("/");
    const hit = this.real.get(key);
    if (hit) return hit;
    let node: RealNode;
    if (parts.length === 0) {
      node = { kind: "dir", layers: this.layers.map((_, i) => i) };
    } else {
      const parent = this.realNode(parts.slice(0, -1));
      node = { kind: "absent", layers: [] };
      if (parent.kind === "dir") {
        for (let j = 0; j < parent.layers.length; j++) {
          const li = parent.layers[j]!;
          const p = path.join(this.layers[li]!, key);
          const st = lstatOrUndefined(p);
          if (!st) continue;
          if (this.target.overlay && isWhiteoutDevice(st)) break;
          const kind = kindOf(st);
          if (kind === "symlink") {
            node = { kind, target: fs.readlinkSync(p), layers: [li] };
          } else if (kind === "dir") {
            const layers = [li];
            let opaque = this.target.overlay && sys.lgetxattr(p, OPAQUE_XATTR)?.toString() === "y";
            for (let k = j + 1; k < parent.layers.length && !opaque; k++) {
              const lk = parent.layers[k]!;
              const q = path.join(this.layers[lk]!, key);
              const s2 = lstatOrUndefined(q);
              if (!s2) continue;
              if (!s2.isDirectory()) break;
              layers.push(lk);
              opaque = sys.lgetxattr(q, OPAQUE_XATTR)?.toString() === "y";
            }
            node = { kind, layers };
          } else {
            node = { kind, layers: [li] };
          }
          break;
        }
      }
    }
    this.real.set(key, node);
    return node;
  }

  /** What `parts` is in the target as modified by the entries planned so far. */
  private lookup(parts: string[]): SimNode {
    const key = parts.join("/");
    const s = this.sim.get(key);
    if (s) return s;
    for (let i = parts.length - 1; i >= 0; i--) {
      const a = this.sim.get(parts.slice(0, i).join("/"));
      if (!a) continue;
      if (a.kind !== "dir" || a.fresh) return { kind: "absent" };
      break;
    }
    const r = this.realNode(parts);
    return { kind: r.kind, target: r.target, inRoot: r.layers[0] === 0 };
  }

  /** Resolve the parent directory components of an entry, following safe symlinks. */
  private resolveDir(parts: string[], name: string): string[] {
    const cur: string[] = [];
    const queue = [...parts];
    let hops = 0;
    while (queue.length) {
      const c = queue.shift()!;
      if (c === "" || c === ".") continue;
      if (c === "..") {
        if (cur.length === 0) throw new ApplyRefused(`symlink escape: ${JSON.stringify(name)} resolves above the root`);
        cur.pop();
        continue;
      }
      const p = [...cur, c];
      const n = this.lookup(p);
      switch (n.kind) {
        case "absent":
          this.sim.set(p.join("/"), { kind: "dir", fresh: true, inRoot: true });
          cur.push(c);
          break;
        case "dir":
          cur.push(c);
          break;
        case "symlink": {
          if (++hops > MAX_SYMLINK_HOPS) throw new ApplyRefused(`too many levels of symbolic links resolving ${JSON.stringify(name)}`);
          const t = n.target ?? "";
          if (t.startsWith("/")) throw new ApplyRefused(`symlink escape: ${JSON.stringify(name)} goes through ${JSON.stringify(p.join("/"))} -> ${JSON.stringify(t)} (absolute)`);
          queue.unshift(...t.split("/"));
          break;
        }
        default:
          throw new ApplyRefused(`${JSON.stringify(name)}: ${JSON.stringify(p.join("/"))} is not a directory`);
      }
    }
    return cur;
  }

  // ---- tar handler ------------------------------------------------------------------------

  entry(h: TarHeader): void {
    this.entries++;
    if (h.type === TarTypes.PaxGlobal) return;
    if (h.sparse) throw new ApplyRefused(`${JSON.stringify(h.name)}: sparse files are not supported`);
    const parts = cleanName(h.name);
    if (parts.length === 0) return; // the root itself: ignored, as containerd does
    for (const k of h.xattrs.keys()) {
      if (k.startsWith("trusted.overlay.")) throw new ApplyRefused(`${JSON.stringify(h.name)}: xattr ${k} is reserved for overlayfs`);
    }
    const base = parts[parts.length - 1]!;
    const dir = this.resolveDir(parts.slice(0, -1), h.name);
    const dirKey = dir.join("/");

    if (base.startsWith(WHITEOUT_PREFIX)) {
      if (base === WHITEOUT_OPAQUE) {
        const cur = this.sim.get(dirKey);
        this.sim.set(dirKey, { kind: "dir", fresh: true, inRoot: true, target: cur?.target });
        this.ops.push({ t: "opaque", rel: dirKey });
        return;
      }
      if (base.startsWith(WHITEOUT_META_PREFIX)) return; // other metadata markers carry nothing
      const orig = base.slice(WHITEOUT_PREFIX.length);
      if (orig === "" || orig === "." || orig === ".." || orig.includes("/")) throw new ApplyRefused(`invalid whiteout ${JSON.stringify(h.name)}`);
      const rel = dir.length ? `${dirKey}/${orig}` : orig;
      this.sim.set(rel, { kind: "absent" });
      this.ops.push({ t: "whiteout", rel, h });
      return;
    }

    const rel = dir.length ? `${dirKey}/${base}` : base;
    const relParts = [...dir, base];
    const existing = this.lookup(relParts);
    switch (h.type) {
      case TarTypes.Dir: {
        const merge = existing.kind === "dir";
        const whitedOut = existing.kind === "absent" && this.ops.some((o) => o.t === "whiteout" && o.rel === rel);
        this.sim.set(rel, { kind: "dir", fresh: !merge || !!existing.fresh, inRoot: true });
        this.ops.push({ t: "dir", rel, h, opaque: this.target.overlay && whitedOut });
        return;
      }
      case TarTypes.Reg: {
        this.sim.set(rel, { kind: "file", inRoot: true });
        if (this.inMemory) {
          this.pendingFile = { rel, data: [], h };
        } else {
          const staged = path.join(this.staging, String(this.stagedCount++));
          this.fd = fs.openSync(staged, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600);
          this.pendingFile = { rel, staged, h };
        }
        if (h.size === 0) this.entryEnd();
        return;
      }
      case TarTypes.Symlink:
        if (!h.linkname) throw new ApplyRefused(`${JSON.stringify(h.name)}: empty symlink target`);
        this.sim.set(rel, { kind: "symlink", target: h.linkname, inRoot: true });
        this.ops.push({ t: "symlink", rel, h });
        return;
      case TarTypes.Link: {
        const lparts = cleanName(h.linkname, "hard link target");
        if (lparts.length === 0) throw new ApplyRefused(`${JSON.stringify(h.name)}: hard link to the root`);
        const ldir = this.resolveDir(lparts.slice(0, -1), h.linkname);
        const lrel = [...ldir, lparts[lparts.length - 1]!];
        const t = this.lookup(lrel);
        if (t.kind === "absent") throw new ApplyRefused(`${JSON.stringify(h.name)}: hard link target ${JSON.stringify(h.linkname)} not found`);
        if (t.kind === "dir") throw new ApplyRefused(`${JSON.stringify(h.name)}: hard link to a directory`);
        if (!t.inRoot) throw new ApplyRefused(`${JSON.stringify(h.name)}: hard link target ${JSON.stringify(h.linkname)} is not in this layer`);
        this.sim.set(rel, { kind: t.kind, target: t.target, inRoot: true });
        this.ops.push({ t: "link", rel, target: lrel.join("/"), h });
        return;
      }
      case TarTypes.Char:
      case TarTypes.Block:
      case TarTypes.Fifo:
        if (h.type !== TarTypes.Fifo && !this.limits.allowDevices) throw new ApplyRefused(`${JSON.stringify(h.name)}: device nodes are not allowed`);
        this.sim.set(rel, { kind: "other", inRoot: true });
        this.ops.push({ t: "node", rel, h });
        return;
      default:
        throw new ApplyRefused(`${JSON.stringify(h.name)}: unsupported tar entry type ${JSON.stringify(h.type)}`);
    }
  }

  data(chunk: Buffer): void {
    if (this.pendingFile?.data) this.pendingFile.data.push(chunk);
    else writeAllSync(this.fd, chunk);
  }

  entryEnd(): void {
    if (this.fd >= 0) {
      fs.closeSync(this.fd);
      this.fd = -1;
    }
    if (this.pendingFile) {
      this.ops.push({ t: "file", ...this.pendingFile });
      this.pendingFile = undefined;
    }
  }

  /** Close any open staging file (after a failure). */
  abandon(): void {
    if (this.fd >= 0) {
      try {
        fs.closeSync(this.fd);
      } catch {
        /* already closed */
      }
      this.fd = -1;
    }
  }
}

// ---- execution ------------------------------------------------------------------------------

export function executePlan(plan: ApplyPlan, target: ApplyTarget): void {
  const root = target.root;
  const lowers = target.overlay ? target.lowers : [];
  const known = new Set<string>([""]);
  const created = new Set<string>();
  const dirTimes: { abs: string; h: TarHeader }[] = [];
  const abs = (rel: string): string => (rel ? path.join(root, rel) : root);

  const removeAll = (p: string): void => fs.rmSync(p, { recursive: true, force: true });

  /** Make sure directory `rel` exists in the root, creating it like containerd's mkparent. */
  const ensureDir = (rel: string): void => {
    if (known.has(rel)) return;
    const parent = path.posix.dirname(rel) === "." ? "" : path.posix.dirname(rel);
    ensureDir(parent);
    const p = abs(rel);
    const st = lstatOrUndefined(p);
    if (st?.isDirectory()) {
      known.add(rel);
      return;
    }
    let opaque = false;
    if (st) {
      // Only an overlay whiteout can stand here (planning refused anything else): the directory
      // replaces a deleted one, so it must hide the lower layers.
      removeAll(p);
      opaque = target.overlay;
    }
    fs.mkdirSync(p, 0o755);
    fs.chmodSync(p, 0o755);
    if (opaque) {
      sys.lsetxattr(p, OPAQUE_XATTR, Buffer.from("y"));
    } else {
      for (const l of lowers) {
        const lp = path.join(l, rel);
        const ls = lstatOrUndefined(lp);
        if (!ls) continue;
        if (!ls.isDirectory()) break;
        fs.lchownSync(p, ls.uid, ls.gid);
        fs.chmodSync(p, ls.mode & 0o7777);
        for (const name of sys.llistxattr(lp)) {
          if (name.startsWith("trusted.overlay.")) continue;
          const v = sys.lgetxattr(lp, name);
          if (v) sys.lsetxattr(p, name, v);
        }
        dirTimes.push({ abs: p, h: { mtime: ls.mtimeMs / 1000, atime: ls.atimeMs / 1000 } as TarHeader });
        break;
      }
    }
    known.add(rel);
  };

  const parentOf = (rel: string): string => {
    const d = path.posix.dirname(rel);
    return d === "." ? "" : d;
  };

  const meta = (p: string, h: TarHeader, isLink: boolean, isDir: boolean): void => {
    fs.lchownSync(p, h.uid, h.gid);
    for (const [k, v] of h.xattrs) {
      try {
        sys.lsetxattr(p, k, v);
      } catch (e) {
        const c = (e as NodeJS.ErrnoException).code;
        if (c === "ENOTSUP" || (c === "EPERM" && k.startsWith("user."))) continue;
        throw e;
      }
    }
    if (!isLink) fs.chmodSync(p, h.mode & 0o7777);
    if (isDir) dirTimes.push({ abs: p, h });
    else fs.lutimesSync(p, clampTime(Math.max(h.atime ?? 0, h.mtime)), clampTime(h.mtime));
  };

  for (const op of plan.ops) {
    const p = abs(op.rel);
    if (op.t === "whiteout" && !target.overlay && !lstatOrUndefined(abs(parentOf(op.rel)))?.isDirectory()) continue;
    ensureDir(parentOf(op.rel));
    switch (op.t) {
      case "whiteout": {
        removeAll(p);
        known.delete(op.rel);
        for (const k of known) if (k.startsWith(op.rel + "/")) known.delete(k);
        if (target.overlay) {
          sys.mknod(p, sys.S_IFCHR, 0);
          fs.lchownSync(p, op.h.uid, op.h.gid);
        }
        continue;
      }
      case "opaque": {
        ensureDir(op.rel);
        if (target.overlay) {
          sys.lsetxattr(p, OPAQUE_XATTR, Buffer.from("y"));
        } else {
          for (const name of fs.readdirSync(p)) {
            const child = op.rel ? `${op.rel}/${name}` : name;
            if (!created.has(child)) {
              removeAll(path.join(p, name));
              for (const k of known) if (k === child || k.startsWith(child + "/")) known.delete(k);
            }
          }
        }
        continue;
      }
      default:
        break;
    }
    const st = lstatOrUndefined(p);
    if (st && !(st.isDirectory() && op.t === "dir")) {
      removeAll(p);
      for (const k of known) if (k === op.rel || k.startsWith(op.rel + "/")) known.delete(k);
    }
    switch (op.t) {
      case "dir":
        if (!st || !st.isDirectory()) fs.mkdirSync(p, 0o700);
        if (op.opaque) sys.lsetxattr(p, OPAQUE_XATTR, Buffer.from("y"));
        known.add(op.rel);
        meta(p, op.h, false, true);
        break;
      case "file":
        if (op.staged) {
          fs.renameSync(op.staged, p);
        } else {
          // O_EXCL: whatever stood here was removed above; nothing (not even a symlink) is followed.
          const fd = fs.openSync(p, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600);
          try {
            for (const piece of op.data ?? []) writeAllSync(fd, piece);
          } finally {
            fs.closeSync(fd);
          }
        }
        meta(p, op.h, false, false);
        break;
      case "symlink":
        fs.symlinkSync(op.h.linkname, p);
        meta(p, op.h, true, false);
        break;
      case "link":
        fs.linkSync(abs(op.target), p);
        meta(p, op.h, lstatOrUndefined(p)?.isSymbolicLink() ?? false, false);
        break;
      case "node": {
        const type = op.h.type === TarTypes.Char ? sys.S_IFCHR : op.h.type === TarTypes.Block ? sys.S_IFBLK : sys.S_IFIFO;
        sys.mknod(p, type | (op.h.mode & 0o7777), op.h.type === TarTypes.Fifo ? 0 : sys.makedev(op.h.devmajor, op.h.devminor));
        meta(p, op.h, false, false);
        break;
      }
    }
    created.add(op.rel);
  }
  for (const { abs: p, h } of dirTimes) {
    if (!lstatOrUndefined(p)) continue;
    fs.lutimesSync(p, clampTime(Math.max(h.atime ?? 0, h.mtime)), clampTime(h.mtime));
  }
}
