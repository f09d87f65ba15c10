/** Small filesystem helpers shared by the snapshotters and the differ. */
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import type { SnapshotUsage } from "#libs/core/snapshots";
import * as sys from "#libs/sys/linux";

/**
 * Disk usage of a tree as containerd's fs.DiskUsage counts it: every inode once (hard links count
 * once), size = allocated blocks * 512, the root included. A missing root is zero.
 */
export function diskUsage(root: string): SnapshotUsage {
  const seen = new Set<string>();
  let size = 0;
  const visit = (p: string): void => {
    let st: fs.Stats;
    try {
      st = fs.lstatSync(p);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return;
      throw e;
    }
    const k = `${st.dev}:${st.ino}`;
    if (!seen.has(k)) {
      seen.add(k);
      size += st.blocks * 512;
    }
    if (st.isDirectory()) {
      for (const name of fs.readdirSync(p)) visit(path.join(p, name));
    }
  };
  visit(root);
  return { size, inodes: seen.size };
}

/** Run a command; reject with its stderr when it fails. */
export function run(cmd: string, args: string[], opts: { cwd?: string } = {}): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: opts.cwd, stdio: ["ignore", "ignore", "pipe"] });
    let err = "";
    child.stderr.on("data", (d: Buffer) => {
      if (err.length < 4096) err += d.toString();
    });
    child.on("error", reject);
    child.on("close", (code, signal) => {
      if (code === 0) resolve();
      else reject(new Error(`${cmd} ${args.join(" ")}: ${signal ?? `exit ${code}`}: ${err.trim()}`));
    });
  });
}

/** Trees up to this many entries are copied in-process (a `cp` child costs more than the copy). */
const SMALL_TREE_ENTRIES = 256;
const SMALL_TREE_BYTES = 4 << 20;

/**
 * Copy the contents of `src` into the existing directory `dst`, keeping owners, modes, times,
 * xattrs, hard links, symlinks and device nodes, and the root's own attributes (coreutils `cp -a`,
 * reflinks where the filesystem can). Small trees (a native snapshot's parent is often empty) are
 * copied in-process with synchronous calls; larger ones by `cp -a`, off the event loop.
 */
export async function copyTree(src: string, dst: string): Promise<void> {
  const entries = smallTree(src);
  if (entries) copySmallTree(src, dst, entries);
  else await run("cp", ["-a", "--reflink=auto", "--", `${src}/.`, dst]);
}

interface TreeEntry {
  rel: string;
  st: fs.Stats;
}

/** The entries below `root` (parents first) when the tree is small and holds only kinds we copy; else undefined. */
function smallTree(root: string): TreeEntry[] | undefined {
  const out: TreeEntry[] = [];
  let bytes = 0;
  const visit = (rel: string): boolean => {
    for (const name of fs.readdirSync(rel ? path.join(root, rel) : root)) {
      const r = rel ? `${rel}/${name}` : name;
      const st = fs.lstatSync(path.join(root, r));
      if (st.isSocket()) return false;
      bytes += st.isFile() ? st.size : 0;
      out.push({ rel: r, st });
      if (out.length > SMALL_TREE_ENTRIES || bytes > SMALL_TREE_BYTES) return false;
      if (st.isDirectory() && !visit(r)) return false;
    }
    return true;
  };
  return visit("") ? out : undefined;
}

function copyAttrs(from: string, to: string, st: fs.Stats): void {
  const link = st.isSymbolicLink();
  fs.lchownSync(to, st.uid, st.gid);
  for (const name of sys.llistxattr(from)) {
    const v = sys.lgetxattr(from, name);
    if (!v) continue;
    try {
      sys.lsetxattr(to, name, v);
    } catch (e) {
      // As `cp -a`: attributes the target cannot hold are skipped.
      const c = (e as NodeJS.ErrnoException).code;
      if (c !== "ENOTSUP" && c !== "EPERM" && c !== "EOPNOTSUPP") throw e;
    }
  }
  if (!link) fs.chmodSync(to, st.mode & 0o7777);
  fs.lutimesSync(to, st.atimeMs / 1000, st.mtimeMs / 1000);
}

function copySmallTree(src: string, dst: string, entries: TreeEntry[]): void {
  const links = new Map<string, string>();
  const dirs: TreeEntry[] = [];
  for (const e of entries) {
    const from = path.join(src, e.rel);
    const to = path.join(dst, e.rel);
    const { st } = e;
    if (st.isDirectory()) {
      fs.mkdirSync(to, 0o700);
      dirs.push(e);
      continue;
    }
    const inode = `${st.dev}:${st.ino}`;
    const first = st.nlink > 1 ? links.get(inode) : undefined;
    if (first) {
      fs.linkSync(first, to);
      continue;
    }
    if (st.isFile()) fs.copyFileSync(from, to, fs.constants.COPYFILE_FICLONE);
    else if (st.isSymbolicLink()) fs.symlinkSync(fs.readlinkSync(from), to);
    else sys.mknod(to, (st.mode & ~0o7777) | 0o600, st.rdev);
    if (st.nlink > 1) links.set(inode, to);
    copyAttrs(from, to, st);
  }
  // Directories last and deepest first, so adding their children does not change their times.
  for (const e of dirs.reverse()) copyAttrs(path.join(src, e.rel), path.join(dst, e.rel), e.st);
  copyAttrs(src, dst, fs.lstatSync(src));
}

/** Remove a tree, ignoring a missing one. */
export async function removeTree(p: string): Promise<void> {
  await fs.promises.rm(p, { recursive: true, force: true, maxRetries: 3 });
}
