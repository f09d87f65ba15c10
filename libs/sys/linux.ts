/**
 * The Linux system calls Node core lacks, through libc with koffi (an FFI whose npm package ships its
 * prebuilt binaries): child subreaping and waitpid by pid, mkfifo, pipe2, a new pseudo-terminal,
 * receiving a file descriptor over a unix socket (SCM_RIGHTS), a terminal's window size, mount and
 * umount2, mknod, extended attributes, inode flags and malloc_trim.
 *
 * The one libc binding of the code base. koffi and libc load on the first call, and each function is
 * bound on its own first call, so a process pays only for what it uses (the shim's footprint) and a
 * worker thread that calls a few of them binds only those. Errors are SysError: Node-style, with the
 * errno name in `code` ("ENOENT", ...), `errno`, `syscall` and, where there is one, `path`.
 */
/* eslint-disable @typescript-eslint/no-explicit-any */
import * as fs from "node:fs";
import * as os from "node:os";

type Fn = (...args: any[]) => any;

/** Every libc function used, by name, with its koffi declaration. */
const DECLS = {
  prctl: "int prctl(int, unsigned long, unsigned long, unsigned long, unsigned long)",
  waitpid: "int waitpid(int, _Out_ int *status, int)",
  mkfifo: "int mkfifo(const char *, uint32_t)",
  pipe2: "int pipe2(void *fds, int)",
  fcntl: "int fcntl(int, int, int)",
  posix_openpt: "int posix_openpt(int)",
  grantpt: "int grantpt(int)",
  unlockpt: "int unlockpt(int)",
  ptsname: "const char *ptsname(int)",
  mount: "int mount(const char *source, const char *target, const char *fstype, unsigned long flags, const char *data)",
  umount2: "int umount2(const char *target, int flags)",
  recvmsg: "long recvmsg(int, flt_msghdr *msg, int)",
  ioctl: "int ioctl(int, unsigned long, void *)",
  malloc_trim: "int malloc_trim(size_t)",
  mknod: "int mknod(const char *path, uint32_t mode, uint64_t dev)",
  lsetxattr: "int lsetxattr(const char *path, const char *name, const void *value, size_t size, int flags)",
  lgetxattr: "intptr_t lgetxattr(const char *path, const char *name, _Out_ void *value, size_t size)",
  llistxattr: "intptr_t llistxattr(const char *path, _Out_ char *list, size_t size)",
} as const;
type Name = keyof typeof DECLS;

let koffi: any;
let libc: any;
const bound: Partial<Record<Name, Fn>> = {};

/** The libc function `name`, bound on first use. */
function c(name: Name): Fn {
  const f = bound[name];
  if (f) return f;
  if (!libc) {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    koffi = require("koffi");
    libc = koffi.load("libc.so.6");
  }
  if (name === "recvmsg") {
    koffi.struct("flt_iovec", { base: "void *", len: "size_t" });
    koffi.struct("flt_msghdr", { name: "void *", namelen: "uint32", iov: "flt_iovec *", iovlen: "size_t", control: "void *", controllen: "size_t", flags: "int" });
  }
  return (bound[name] = libc.func(DECLS[name]) as Fn);
}

/** errno of the last libc call on this thread (read it right after the call). */
function errno(): number {
  return koffi.errno() as number;
}

const ERRNO_NAMES: Record<number, string> = {};
for (const [k, v] of Object.entries(os.constants.errno)) ERRNO_NAMES[v] ??= k;

export class SysError extends Error {
  readonly errno: number;
  /** The errno name (ENOENT...), like Node's system errors. */
  readonly code: string;
  readonly syscall: string;
  readonly path?: string;
  /** `detail` says what was operated on (a path, "overlay overlay on /x"); `path` is set when it is one. */
  constructor(syscall: string, errnum: number, detail?: string, p?: string) {
    const name = ERRNO_NAMES[errnum] ?? `errno ${errnum}`;
    super(`${syscall}${detail ? ` ${detail}` : ""}: ${name}`);
    this.name = "SysError";
    this.errno = errnum;
    this.code = name;
    this.syscall = syscall;
    if (p !== undefined) this.path = p;
  }
}

/** Give the free memory glibc's malloc holds back to the system (what Buffers freed by a GC left). */
export function mallocTrim(): void {
  c("malloc_trim")(0);
}

const PR_SET_CHILD_SUBREAPER = 36;
const WNOHANG = 1;

/** Make this process the reaper of orphaned descendants (their exits come to us, not to init). */
export function setChildSubreaper(): void {
  if (c("prctl")(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) !== 0) throw new SysError("prctl(PR_SET_CHILD_SUBREAPER)", errno());
}

export interface WaitResult {
  pid: number;
  /** Exit code, or 128 + signal for a signalled process (containerd's convention). */
  exitStatus: number;
}

/** waitpid(pid, WNOHANG): the exit when `pid` has exited, undefined while it runs or when it is not our child. */
export function reapPid(pid: number): WaitResult | undefined {
  const st = [0];
  const r = c("waitpid")(pid, st, WNOHANG) as number;
  if (r !== pid) return undefined;
  const status = st[0]!;
  const sig = status & 0x7f;
  return { pid, exitStatus: sig === 0 ? (status >> 8) & 0xff : 128 + sig };
}

export function mkfifo(path: string, mode = 0o700): void {
  if (c("mkfifo")(path, mode) !== 0) throw new SysError("mkfifo", errno(), path, path);
}

const O_CLOEXEC = 0o2000000;

/** A pipe (close-on-exec): [read end, write end]. */
export function pipe(): [number, number] {
  const fds = Buffer.alloc(8);
  if (c("pipe2")(fds, O_CLOEXEC) !== 0) throw new SysError("pipe2", errno());
  return [fds.readInt32LE(0), fds.readInt32LE(4)];
}

const F_DUPFD_CLOEXEC = 1030;

/** dup(2), close-on-exec. */
export function dupFd(fd: number): number {
  const r = c("fcntl")(fd, F_DUPFD_CLOEXEC, 0) as number;
  if (r < 0) throw new SysError("fcntl(F_DUPFD_CLOEXEC)", errno());
  return r;
}

/** A new pseudo-terminal: its master (close-on-exec) and the path of its slave. */
export function openPty(): { master: number; slave: string } {
  const master = c("posix_openpt")(0o2 | 0o400 | O_CLOEXEC) as number; // O_RDWR | O_NOCTTY
  if (master < 0) throw new SysError("posix_openpt", errno());
  if (c("grantpt")(master) !== 0 || c("unlockpt")(master) !== 0) {
    const e = errno();
    fs.closeSync(master);
    throw new SysError("unlockpt", e);
  }
  return { master, slave: c("ptsname")(master) as string };
}

/** mount(2); an empty `data` passes NULL. */
export function mount(source: string, target: string, fstype: string, flags: number, data: string): void {
  if (c("mount")(source, target, fstype, flags, data || null) !== 0) {
    throw new SysError("mount", errno(), `${fstype} ${source} on ${target}`, target);
  }
}

export const MNT_DETACH = 2;
export const UMOUNT_NOFOLLOW = 8;

/** umount2; EINVAL (not a mount point) and ENOENT are reported as false. */
export function unmount(target: string, flags = 0): boolean {
  if (c("umount2")(target, flags) === 0) return true;
  const e = errno();
  if (e === os.constants.errno.EINVAL || e === os.constants.errno.ENOENT) return false;
  throw new SysError("umount", e, target, target);
}

const MSG_CMSG_CLOEXEC = 0x40000000;
const SOL_SOCKET = 1;
const SCM_RIGHTS = 1;

/**
 * One recvmsg on a (non-blocking) unix socket fd: the data and the first passed descriptor.
 * Returns undefined when nothing is there yet (EAGAIN).
 */
export function receiveFd(sockFd: number): { data: string; fd: number } | undefined {
  const data = Buffer.alloc(4096);
  const ctrl = Buffer.alloc(64);
  const n = Number(c("recvmsg")(sockFd, { name: null, namelen: 0, iov: [{ base: data, len: data.length }], iovlen: 1, control: ctrl, controllen: ctrl.length, flags: 0 }, MSG_CMSG_CLOEXEC));
  if (n < 0) {
    const e = errno();
    if (e === os.constants.errno.EAGAIN || e === os.constants.errno.EINTR) return undefined;
    throw new SysError("recvmsg", e);
  }
  const len = Number(ctrl.readBigUInt64LE(0));
  if (len < 20 || ctrl.readInt32LE(8) !== SOL_SOCKET || ctrl.readInt32LE(12) !== SCM_RIGHTS) {
    throw new SysError("recvmsg", os.constants.errno.EINVAL, "no file descriptor in the message");
  }
  return { data: data.subarray(0, n).toString(), fd: ctrl.readInt32LE(16) };
}

const TIOCSWINSZ = 0x5414;

export function setWinsize(fd: number, cols: number, rows: number): void {
  const ws = Buffer.alloc(8);
  ws.writeUInt16LE(rows & 0xffff, 0);
  ws.writeUInt16LE(cols & 0xffff, 2);
  if (c("ioctl")(fd, TIOCSWINSZ, ws) !== 0) throw new SysError("ioctl(TIOCSWINSZ)", errno());
}

/** mount(2) flags. */
export const MountFlags = {
  MS_RDONLY: 0x1,
  MS_NOSUID: 0x2,
  MS_NODEV: 0x4,
  MS_NOEXEC: 0x8,
  MS_SYNCHRONOUS: 0x10,
  MS_REMOUNT: 0x20,
  MS_MANDLOCK: 0x40,
  MS_DIRSYNC: 0x80,
  MS_NOATIME: 0x400,
  MS_NODIRATIME: 0x800,
  MS_BIND: 0x1000,
  MS_REC: 0x4000,
  MS_UNBINDABLE: 0x20000,
  MS_PRIVATE: 0x40000,
  MS_SLAVE: 0x80000,
  MS_SHARED: 0x100000,
  MS_RELATIME: 0x200000,
  MS_STRICTATIME: 0x1000000,
} as const;

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
  if (c("mknod")(p, mode, dev) !== 0) throw new SysError("mknod", errno(), p, p);
}

export function lsetxattr(p: string, name: string, value: Buffer): void {
  if (c("lsetxattr")(p, name, value, value.length, 0) !== 0) throw new SysError("lsetxattr", errno(), p, p);
}

/** The value of xattr `name`, or undefined when absent (ENODATA) or unsupported. */
export function lgetxattr(p: string, name: string): Buffer | undefined {
  const get = c("lgetxattr");
  for (let size = 256; ; size *= 4) {
    const buf = Buffer.alloc(size);
    const n = get(p, name, buf, size) as number;
    if (n >= 0) return buf.subarray(0, n);
    const e = errno();
    if (e === os.constants.errno.ERANGE && size < 1 << 20) continue;
    if (e === os.constants.errno.ENODATA || e === os.constants.errno.ENOTSUP) return undefined;
    throw new SysError("lgetxattr", e, p, p);
  }
}

/** Names of the xattrs of `p` (not following a symlink). */
export function llistxattr(p: string): string[] {
  const list = c("llistxattr");
  const n0 = list(p, null, 0) as number;
  if (n0 < 0) {
    const e = errno();
    if (e === os.constants.errno.ENOTSUP) return [];
    throw new SysError("llistxattr", e, p, p);
  }
  if (n0 === 0) return [];
  const buf = Buffer.alloc(n0 + 256);
  const n = list(p, buf, buf.length) as number;
  if (n < 0) throw new SysError("llistxattr", errno(), p, p);
  return buf.subarray(0, n).toString("utf8").split("\0").filter(Boolean);
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
    // The kernel reads and writes an int; the buffer is a long wide all the same.
    const flags = Buffer.alloc(8);
    if (c("ioctl")(fd, FS_IOC_GETFLAGS, flags) !== 0) return false;
    const f = flags.readInt32LE(0);
    if (f & FS_TOPDIR_FL) return true;
    flags.writeInt32LE(f | FS_TOPDIR_FL, 0);
    return c("ioctl")(fd, FS_IOC_SETFLAGS, flags) === 0;
  } catch {
    return false;
  } finally {
    if (fd >= 0) fs.closeSync(fd);
  }
}
