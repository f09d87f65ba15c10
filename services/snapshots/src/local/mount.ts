/**
 * Mounting containerd Mount lists on this host (for the differ's temporary mounts), as containerd's
 * mount.All does: option words become mount flags, the rest is filesystem data; read-only binds are
 * remounted read-only; overlay options too long for one page get their lowerdirs made relative to a
 * common directory and are mounted from there.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type { Mount } from "../../../../libs/core/snapshots";
import { errInvalidArgument } from "../../../../libs/errdefs";
import * as sys from "./sys";

const FLAGS: Record<string, [clear: boolean, flag: number]> = {
  async: [true, 0x10], atime: [true, 0x400], bind: [false, sys.MS_BIND], defaults: [false, 0], dev: [true, 0x4],
  diratime: [true, 0x800], dirsync: [false, 0x80], exec: [true, 0x8], mand: [false, 0x40], noatime: [false, 0x400],
  nodev: [false, 0x4], nodiratime: [false, 0x800], noexec: [false, 0x8], nomand: [true, 0x40], norelatime: [true, 0x200000],
  nostrictatime: [true, 0x1000000], nosuid: [false, 0x2], rbind: [false, sys.MS_BIND | sys.MS_REC], relatime: [false, 0x200000],
  remount: [false, sys.MS_REMOUNT], ro: [false, sys.MS_RDONLY], rw: [true, sys.MS_RDONLY], strictatime: [false, 0x1000000],
  suid: [true, 0x2], sync: [false, 0x10],
};
const PROPAGATION: Record<string, number> = { private: 1 << 18, rprivate: (1 << 18) | sys.MS_REC, shared: 1 << 20, rshared: (1 << 20) | sys.MS_REC, slave: 1 << 19, rslave: (1 << 19) | sys.MS_REC, unbindable: 1 << 17, runbindable: (1 << 17) | sys.MS_REC };

export function parseOptions(options: string[]): { flags: number; propagation: number; data: string[] } {
  let flags = 0;
  let propagation = 0;
  const data: string[] = [];
  for (const o of options) {
    const f = FLAGS[o];
    if (f) {
      flags = f[0] ? flags & ~f[1] : flags | f[1];
    } else if (PROPAGATION[o] !== undefined) {
      propagation |= PROPAGATION[o]!;
    } else {
      data.push(o);
    }
  }
  return { flags, propagation, data };
}

const PAGE = 4096;

/** containerd's compactLowerdirOption: lowerdirs relative to their common parent directory. */
export function compactLowerdir(data: string[]): { chdir?: string; data: string[] } {
  const i = data.findIndex((o) => o.startsWith("lowerdir="));
  if (i < 0) return { data };
  const dirs = data[i]!.slice("lowerdir=".length).split(":");
  if (dirs.length < 2) return { data };
  let common = dirs[0]!;
  for (const d of dirs) while (!d.startsWith(common)) common = common.slice(0, -1);
  common = path.dirname(common.endsWith("/") ? common + "x" : common);
  if (common === "/" || common === ".") return { data };
  const rel = dirs.map((d) => d.slice(common.length + 1));
  const out = [...data];
  out.splice(i, 1);
  out.push(`lowerdir=${rel.join(":")}`);
  return { chdir: common, data: out };
}

/** Mount one Mount at `target`. */
export function mountOne(m: Mount, target: string): void {
  const { flags, propagation, data } = parseOptions(m.options);
  let opts = data;
  let chdir: string | undefined;
  if (m.type === "overlay" && opts.join(",").length >= PAGE - 512) ({ chdir, data: opts } = compactLowerdir(opts));
  const str = opts.join(",");
  if (str.length >= PAGE) throw errInvalidArgument("mount options is too long");
  const type = m.type === "bind" ? "none" : m.type;
  const oflags = flags & ~sys.MS_REMOUNT;
  const cwd = process.cwd();
  if (chdir) process.chdir(chdir);
  try {
    sys.mount(m.source, target, type, oflags, str);
  } finally {
    if (chdir) process.chdir(cwd);
  }
  if (propagation) sys.mount("", target, "", propagation, "");
  if ((oflags & (sys.MS_BIND | sys.MS_RDONLY)) === (sys.MS_BIND | sys.MS_RDONLY)) sys.mount("", target, "", oflags | sys.MS_REMOUNT, "");
}

/** Mount every Mount in order at `target`; on failure, undo what was mounted. */
export function mountAll(mounts: Mount[], target: string): void {
  let done = 0;
  try {
    for (const m of mounts) {
      mountOne(m, target);
      done++;
    }
  } catch (e) {
    for (; done > 0; done--) sys.umount(target, sys.MNT_DETACH);
    throw e;
  }
}

/** Unmount everything mounted at `target` (stacked mounts included). */
export function unmountAll(target: string): void {
  for (let i = 0; i < 64; i++) {
    try {
      sys.umount(target, 0);
    } catch (e) {
      const c = (e as NodeJS.ErrnoException).code;
      if (c === "EINVAL" || c === "ENOENT") return;
      if (c === "EBUSY") {
        sys.umount(target, sys.MNT_DETACH);
        continue;
      }
      throw e;
    }
  }
}

/** Run `fn` with `mounts` mounted at a fresh directory under `base`; always unmounts and removes it. */
export async function withTempMount<T>(base: string, mounts: Mount[], fn: (dir: string) => Promise<T>): Promise<T> {
  fs.mkdirSync(base, { recursive: true, mode: 0o700 });
  const dir = fs.mkdtempSync(path.join(base, "mnt-"));
  try {
    mountAll(mounts, dir);
    try {
      return await fn(dir);
    } finally {
      unmountAll(dir);
    }
  } finally {
    fs.rmdirSync(dir);
  }
}

/** Whether the mount list is a single read-only mount (bind ro or overlay without an upper dir). */
export function isReadOnly(mounts: Mount[]): boolean {
  if (mounts.length !== 1) return false;
  const m = mounts[0]!;
  if (m.type === "overlay") return !m.options.some((o) => o.startsWith("upperdir="));
  return m.options.includes("ro");
}
