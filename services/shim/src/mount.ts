/**
 * Rootfs mounts with containerd's option parsing (mount_linux.go): flag words become mount(2) flags,
 * the rest is the data string; a read-only bind is remounted read-only, since the kernel ignores
 * MS_RDONLY on the first bind. Unmounting loops until nothing is mounted at the target.
 */
import * as fs from "node:fs";
import { mount as sysMount, unmount, MNT_DETACH, MountFlags as F } from "../../../libs/sys/linux";
import { classError } from "../../../libs/ttrpc/errors";

export interface MountSpec {
  type: string;
  source: string;
  target?: string;
  options: string[];
}

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
const PROPAGATION: Record<string, number> = {
  private: F.MS_PRIVATE,
  rprivate: F.MS_PRIVATE | F.MS_REC,
  shared: F.MS_SHARED,
  rshared: F.MS_SHARED | F.MS_REC,
  slave: F.MS_SLAVE,
  rslave: F.MS_SLAVE | F.MS_REC,
};

export function parseOptions(options: readonly string[]): { flags: number; propagation: number; data: string } {
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
  return { flags, propagation, data: data.join(",") };
}

export function mountOne(m: MountSpec, target: string): void {
  const { flags, propagation, data } = parseOptions(m.options);
  if (data.length > 4095) throw classError("invalid argument", `mount options too long (${data.length} bytes) for ${m.type} on ${target}`);
  const type = m.type === "bind" || m.type === "rbind" ? "" : m.type;
  try {
    sysMount(m.source, target, type || "none", flags, data);
    if (flags & F.MS_BIND && flags & F.MS_RDONLY) sysMount("", target, "", flags | F.MS_REMOUNT, "");
    if (propagation) sysMount("", target, "", propagation, "");
  } catch (e) {
    throw classError("unknown", `failed to mount rootfs component ${JSON.stringify({ type: m.type, source: m.source, options: m.options })}: ${(e as Error).message}`);
  }
}

/** Mount every component on `target` in order; on failure undo what was mounted. */
export function mountAll(mounts: readonly MountSpec[], target: string): void {
  let done = 0;
  try {
    for (const m of mounts) {
      mountOne(m, target);
      done++;
    }
  } catch (e) {
    if (done) unmountAll(target);
    throw e;
  }
}

/** Unmount everything stacked on `target` (busy mounts are detached after a few tries). */
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
