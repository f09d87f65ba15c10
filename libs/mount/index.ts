/**
 * Mounts, as containerd's `mount` package has them: the Mount record snapshotters hand out and tasks
 * take as their rootfs, its wire form, fstab-style options parsed into mount(2) flags and filesystem
 * data, and mounting and unmounting a list of them at a target on this host. Shared by the snapshots
 * process (the differ's temporary mounts) and the shim (a task's rootfs).
 *
 * One module on purpose: the shim loads it at start, and its footprint counts modules. The syscalls
 * go through libs/sys/linux, which loads koffi only on the first one.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { mount as sysMount, unmount, MNT_DETACH, MountFlags as F } from "../sys/linux";

/** A filesystem mount, as containerd hands it around (host-mountable as given). */
export interface Mount {
  type: string;
  source: string;
  /** Only set by some callers (containerd 2.x mount manager); snapshotters leave it empty. */
  target?: string;
  options: string[];
}

/** containerd.types.Mount on the wire. */
export interface MountProto {
  type: string;
  source: string;
  target: string;
  options: string[];
}

export function mountToProto(m: Mount): MountProto {
  return { type: m.type, source: m.source, target: m.target ?? "", options: [...m.options] };
}

/** A decoded containerd.types.Mount (absent fields as protobufjs leaves them). */
export function mountFromProto(m: { type?: unknown; source?: unknown; target?: unknown; options?: unknown }): Mount {
  const out: Mount = { type: String(m.type ?? ""), source: String(m.source ?? ""), options: [...((m.options as string[] | undefined) ?? [])] };
  if (m.target) out.target = String(m.target);
  return out;
}

/** Option words that set a flag, and those that clear one (containerd's parseMountOptions table). */
const SET: Record<string, number> = {
  bind: F.MS_BIND,
  rbind: F.MS_BIND | F.MS_REC,
  dirsync: F.MS_DIRSYNC,
  mand: F.MS_MANDLOCK,
  noatime: F.MS_NOATIME,
  nodev: F.MS_NODEV,
  nodiratime: F.MS_NODIRATIME,
  noexec: F.MS_NOEXEC,
  nosuid: F.MS_NOSUID,
  relatime: F.MS_RELATIME,
  remount: F.MS_REMOUNT,
  ro: F.MS_RDONLY,
  strictatime: F.MS_STRICTATIME,
  sync: F.MS_SYNCHRONOUS,
};
const CLEAR: Record<string, number> = {
  async: F.MS_SYNCHRONOUS,
  atime: F.MS_NOATIME,
  dev: F.MS_NODEV,
  diratime: F.MS_NODIRATIME,
  exec: F.MS_NOEXEC,
  nomand: F.MS_MANDLOCK,
  norelatime: F.MS_RELATIME,
  nostrictatime: F.MS_STRICTATIME,
  rw: F.MS_RDONLY,
  suid: F.MS_NOSUID,
};
/** Propagation words: applied by a mount call of their own, after the mount. */
const PROPAGATION: Record<string, number> = {
  private: F.MS_PRIVATE,
  rprivate: F.MS_PRIVATE | F.MS_REC,
  shared: F.MS_SHARED,
  rshared: F.MS_SHARED | F.MS_REC,
  slave: F.MS_SLAVE,
  rslave: F.MS_SLAVE | F.MS_REC,
  unbindable: F.MS_UNBINDABLE,
  runbindable: F.MS_UNBINDABLE | F.MS_REC,
};

export interface ParsedOptions {
  flags: number;
  propagation: number;
  /** The filesystem-specific words, in order (joined with "," they are mount(2)'s data). */
  data: string[];
}

/** fstab-style options -> mount(2) flags, propagation flags and filesystem data. */
export function parseOptions(options: readonly string[]): ParsedOptions {
  let flags = 0;
  let propagation = 0;
  const data: string[] = [];
  for (const o of options) {
    if (o === "defaults") continue;
    if (o in SET) flags |= SET[o]!;
    else if (o in CLEAR) flags &= ~CLEAR[o]!;
    else if (o in PROPAGATION) propagation |= PROPAGATION[o]!;
    else data.push(o);
  }
  return { flags, propagation, data };
}

/** mount(2) copies one page of data. */
const PAGE = 4096;

/**
 * Overlay lowerdirs made relative to their common parent directory (the snapshots directory), for an
 * option string that would not fit in a page otherwise: the mount is then made from that directory.
 */
export function compactLowerdir(data: readonly string[]): { chdir?: string; data: string[] } {
  const i = data.findIndex((o) => o.startsWith("lowerdir="));
  if (i < 0) return { data: [...data] };
  const dirs = data[i]!.slice("lowerdir=".length).split(":");
  if (dirs.length < 2) return { data: [...data] };
  let common = dirs[0]!;
  for (const d of dirs) while (!d.startsWith(common)) common = common.slice(0, -1);
  // Back to a whole directory: snapshot ids share digits ("/s/12" and "/s/13" have "/s/1" in common).
  common = path.dirname(common.endsWith("/") ? common + "x" : common);
  if (common === "/" || common === ".") return { data: [...data] };
  const out = [...data];
  out.splice(i, 1);
  out.push(`lowerdir=${dirs.map((d) => d.slice(common.length + 1)).join(":")}`);
  return { chdir: common, data: out };
}

/**
 * Mount `m` at `target`: flag words become mount(2) flags, the rest its data; then the propagation
 * words, then a read-only bind is remounted read-only (the kernel ignores MS_RDONLY on the first bind).
 * Options too long for one page: InvalidArgument. A failed mount(2): an error naming the mount.
 */
export function mountOne(m: Mount, target: string): void {
  const { flags, propagation, data: words } = parseOptions(m.options);
  let data = words;
  let chdir: string | undefined;
  if (m.type === "overlay" && data.join(",").length >= PAGE - 512) ({ chdir, data } = compactLowerdir(data));
  const str = data.join(",");
  const size = Buffer.byteLength(str);
  if (size >= PAGE) {
    // Loaded here, on the error path only: the shim does not load errdefs otherwise.
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { errInvalidArgument } = require("../errdefs") as typeof import("../errdefs");
    throw errInvalidArgument(`mount options is too long (${size} bytes) for ${m.type} on ${target}`);
  }
  const type = m.type === "bind" || m.type === "rbind" ? "none" : m.type;
  try {
    const cwd = chdir && process.cwd();
    if (chdir) process.chdir(chdir);
    try {
      sysMount(m.source, target, type, flags, str);
    } finally {
      if (cwd) process.chdir(cwd);
    }
    if (propagation) sysMount("", target, "", propagation, "");
    if ((flags & (F.MS_BIND | F.MS_RDONLY)) === (F.MS_BIND | F.MS_RDONLY)) sysMount("", target, "", flags | F.MS_REMOUNT, "");
  } catch (e) {
    // A plain error (class unknown): a raw ENOENT or EPERM would pass for NotFound or PermissionDenied.
    throw new Error(`failed to mount rootfs component ${JSON.stringify({ type: m.type, source: m.source, options: m.options })}: ${(e as Error).message}`, { cause: e });
  }
}

/** Mount every component on `target` in order; on failure undo what was mounted. */
export function mountAll(mounts: readonly Mount[], target: string): void {
  let done = 0;
  try {
    for (const m of mounts) {
      mountOne(m, target);
      done++;
    }
  } catch (e) {
    for (; done > 0; done--) {
      try {
        unmount(target, MNT_DETACH);
      } catch {
        break;
      }
    }
    throw e;
  }
}

/** Unmount everything stacked on `target`; a busy mount is detached. Nothing mounted: nothing done. */
export function unmountAll(target: string): void {
  for (let i = 0; i < 64; i++) {
    try {
      if (!unmount(target, 0)) return;
    } catch (e) {
      if ((e as { code?: string }).code !== "EBUSY") throw e;
      try {
        if (!unmount(target, MNT_DETACH)) return;
      } catch {
        return;
      }
    }
  }
}

/**
 * Take everything stacked on `target` out of the mount tree at once and hand back descriptors that
 * keep each detached mount alive; closing them (off the hot path) is what tears the mounts down.
 * Unmounting an overlay syncs its whole upper filesystem, which on a busy host takes tens of
 * milliseconds: this moves that wait off the caller's path (the data is synced all the same, only
 * later, and nothing is mounted at `target` any more when this returns).
 */
export function detachAll(target: string): number[] {
  const held: number[] = [];
  for (let i = 0; i < 64; i++) {
    let fd: number;
    try {
      fd = fs.openSync(target, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
    } catch {
      unmountAll(target);
      break;
    }
    let detached = false;
    try {
      detached = unmount(target, MNT_DETACH);
    } finally {
      if (detached) held.push(fd);
      else fs.closeSync(fd);
    }
    if (!detached) break;
  }
  return held;
}

/** Close what detachAll held, in the background (the last close of a mount does its teardown). */
export function releaseDetached(fds: number[]): void {
  for (const fd of fds) fs.close(fd, () => undefined);
}

/** Run `fn` with `mounts` mounted at a fresh directory under `base`; always unmounts and removes it. */
export async function withTempMount<T>(base: string, mounts: readonly Mount[], fn: (dir: string) => Promise<T>): Promise<T> {
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
export function isReadOnly(mounts: readonly Mount[]): boolean {
  if (mounts.length !== 1) return false;
  const m = mounts[0]!;
  if (m.type === "overlay") return !m.options.some((o) => o.startsWith("upperdir="));
  return m.options.includes("ro");
}
