/**
 * The few Linux system calls Node's fs lacks, through libc with `koffi` (an FFI whose npm package
 * ships its prebuilt binaries): mknod (whiteout and device nodes, FIFOs), extended attributes, mount
 * and umount2, inode flags (ioctl). Errors are Node-style: an Error with `code` ("ENOENT", ...) and `errno`, `syscall`, `path`.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import koffi from "koffi";

interface Libc {
  mknod(path: string, mode: number, dev: number): number;
  lsetxattr(path: string, name: string, value: Buffer, size: number, flags: number): number;
  lgetxattr(path: string, name: string, value: Buffer | null, size: number): number;
  llistxattr(path: string, list: Buffer | null, size: number): number;
  mount(source: string | null, target: string, fstype: string | null, flags: number, data: string | null): number;
  umount2(target: string, flags: number): number;
  ioctl(fd: number, request: number, arg: number[]): number;
}

let libc: Libc | undefined;

function lib(): Libc {
  if (libc) return libc;
  const l = koffi.load("libc.so.6");
  libc = {
    mknod: l.func("int mknod(const char *path, uint32_t mode, uint64_t dev)"),
    lsetxattr: l.func("int lsetxattr(const char *path, const char *name, const void *value, size_t size, int flags)"),
    lgetxattr: l.func("intptr_t lgetxattr(const char *path, const char *name, _Out_ void *value, size_t size)"),
    llistxattr: l.func("intptr_t llistxattr(const char *path, _Out_ char *list, size_t size)"),
    mount: l.func("int mount(const char *source, const char *target, const char *fstype, unsigned long flags, const char *data)"),
    umount2: l.func("int umount2(const char *target, int flags)"),
    ioctl: l.func("int ioctl(int fd, unsigned long request, _Inout_ int *arg)"),
  } as unknown as Libc;
  return libc;
}

const ERRNO_NAMES: Record<number, string> = Object.fromEntries(Object.entries(os.constants.errno).map(([k, v]) => [v, k]));

export function sysError(syscall: string, p: string, errno = koffi.errno()): NodeJS.ErrnoException {
  const code = ERRNO_NAMES[errno] ?? `E${errno}`;
  const e = new Error(`${code}: ${syscall} ${JSON.stringify(p)} failed (errno ${errno})`) as NodeJS.ErrnoException;
  e.code = code;
  e.errno = errno;
  e.syscall = syscall;
  e.path = p;
  return e;
}

export const S_IFIFO = 0o010000;
export const S_IFCHR = 0o020000;
export const S_IFBLK = 0o060000;

/** Linux makedev (glibc's encoding). */
export function makedev(major: number, minor: number): number {
  return (((major & 0xfffff000) * 2 ** 32) + ((major & 0xfff) << 8) + ((minor & 0xffffff00) * 2 ** 12) + (minor & 0xff));
}

export function devMajor(rdev: number): number {
  const hi = Math.floor(rdev / 2 ** 32);
  return ((rdev >>> 8) & 0xfff) | (hi & 0xfffff000);
}

export function devMinor(rdev: number): number {
  const lo = rdev % 2 ** 32;
  return (lo & 0xff) | ((lo >>> 12) & 0xfff00);
}

export function mknod(p: string, mode: number, dev = 0): void {
  if (lib().mknod(p, mode, dev) !== 0) throw sysError("mknod", p);
}

export function lsetxattr(p: string, name: string, value: Buffer): void {
  if (lib().lsetxattr(p, name, value, value.length, 0) !== 0) throw sysError("lsetxattr", p);
}

/** The value of xattr `name`, or undefined when absent (ENODATA) or unsupported. */
export function lgetxattr(p: string, name: string): Buffer | undefined {
  const l = lib();
  for (let size = 256; ; size *= 4) {
    const buf = Buffer.alloc(size);
    const n = l.lgetxattr(p, name, buf, size);
    if (n >= 0) return buf.subarray(0, n);
    const errno = koffi.errno();
    if (errno === os.constants.errno.ERANGE && size < 1 << 20) continue;
    if (errno === os.constants.errno.ENODATA || errno === os.constants.errno.ENOTSUP) return undefined;
    throw sysError("lgetxattr", p, errno);
  }
}

/** Names of the xattrs of `p` (not following a symlink). */
export function llistxattr(p: string): string[] {
  const l = lib();
  const n0 = l.llistxattr(p, null, 0);
  if (n0 < 0) {
    const errno = koffi.errno();
    if (errno === os.constants.errno.ENOTSUP) return [];
    throw sysError("llistxattr", p, errno);
  }
  if (n0 === 0) return [];
  const buf = Buffer.alloc(n0 + 256);
  const n = l.llistxattr(p, buf, buf.length);
  if (n < 0) throw sysError("llistxattr", p);
  return buf.subarray(0, n).toString("utf8").split("\0").filter(Boolean);
}

export const MS_RDONLY = 0x1;
export const MS_BIND = 0x1000;
export const MS_REC = 0x4000;
export const MS_REMOUNT = 0x20;
export const MNT_DETACH = 0x2;

export function mount(source: string, target: string, fstype: string, flags: number, data: string): void {
  if (lib().mount(source, target, fstype, flags, data || null) !== 0) throw sysError("mount", target);
}

export function umount(target: string, flags = 0): void {
  if (lib().umount2(target, flags) !== 0) throw sysError("umount2", target);
}

const FS_IOC_GETFLAGS = 0x80086601;
const FS_IOC_SETFLAGS = 0x40086602;
const FS_TOPDIR_FL = 0x00020000;

/**
 * Mark `dir` as the top of independent directory hierarchies (`chattr +T`): ext4's Orlov allocator
 * then spreads its subdirectories over block groups with free inodes, instead of packing each new
 * tree into the parent's group (where, without a journal, every inode allocation rescans the inodes
 * deleted in the last seconds). Best effort: false where the filesystem has no such flag.
 */
export function setTopDir(dir: string): boolean {
  let fd = -1;
  try {
    fd = fs.openSync(dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
    const flags = [0];
    if (lib().ioctl(fd, FS_IOC_GETFLAGS, flags) !== 0) return false;
    if (flags[0]! & FS_TOPDIR_FL) return true;
    flags[0] = flags[0]! | FS_TOPDIR_FL;
    return lib().ioctl(fd, FS_IOC_SETFLAGS, flags) === 0;
  } catch {
    return false;
  } finally {
    if (fd >= 0) fs.closeSync(fd);
  }
}
