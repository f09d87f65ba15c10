/**
 * The few Linux system calls Node core lacks, through koffi (an FFI with prebuilt binaries): child
 * subreaping and waitpid by pid, mkfifo, pipe2, a new pseudo-terminal, mount/umount2, receiving a file descriptor over a unix socket
 * (SCM_RIGHTS) and setting a terminal's window size. libc is loaded on first use.
 */
/* eslint-disable @typescript-eslint/no-explicit-any */
import * as fs from "node:fs";

type Fn = (...args: any[]) => any;
interface Libc {
  prctl: Fn;
  waitpid: Fn;
  mkfifo: Fn;
  pipe2: Fn;
  fcntl: Fn;
  posix_openpt: Fn;
  grantpt: Fn;
  unlockpt: Fn;
  ptsname: Fn;
  mount: Fn;
  umount2: Fn;
  recvmsg: Fn;
  ioctl: Fn;
  mallocTrim: Fn;
  errno: () => number;
}

let libc: Libc | undefined;

function load(): Libc {
  if (libc) return libc;
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const koffi = require("koffi");
  const lib = koffi.load("libc.so.6");
  koffi.struct("flt_iovec", { base: "void *", len: "size_t" });
  koffi.struct("flt_msghdr", {
    name: "void *",
    namelen: "uint32",
    iov: "flt_iovec *",
    iovlen: "size_t",
    control: "void *",
    controllen: "size_t",
    flags: "int",
  });
  libc = {
    prctl: lib.func("int prctl(int, unsigned long, unsigned long, unsigned long, unsigned long)"),
    waitpid: lib.func("int waitpid(int, _Out_ int *status, int)"),
    mkfifo: lib.func("int mkfifo(const char *, uint32_t)"),
    pipe2: lib.func("int pipe2(void *fds, int)"),
    fcntl: lib.func("int fcntl(int, int, int)"),
    posix_openpt: lib.func("int posix_openpt(int)"),
    grantpt: lib.func("int grantpt(int)"),
    unlockpt: lib.func("int unlockpt(int)"),
    ptsname: lib.func("const char *ptsname(int)"),
    mount: lib.func("int mount(const char *, const char *, const char *, unsigned long, const char *)"),
    umount2: lib.func("int umount2(const char *, int)"),
    recvmsg: lib.func("long recvmsg(int, flt_msghdr *msg, int)"),
    ioctl: lib.func("int ioctl(int, unsigned long, void *)"),
    mallocTrim: lib.func("int malloc_trim(size_t)"),
    errno: () => koffi.errno() as number,
  };
  return libc;
}

const ERRNO_NAMES: Record<number, string> = {
  1: "EPERM", 2: "ENOENT", 3: "ESRCH", 4: "EINTR", 9: "EBADF", 10: "ECHILD", 11: "EAGAIN", 13: "EACCES", 16: "EBUSY",
  17: "EEXIST", 20: "ENOTDIR", 22: "EINVAL", 28: "ENOSPC", 36: "ENAMETOOLONG", 40: "ELOOP",
};

export class SysError extends Error {
  readonly errno: number;
  /** The errno name (ENOENT...), like Node's system errors. */
  readonly code: string;
  constructor(call: string, errno: number, detail?: string) {
    const name = ERRNO_NAMES[errno] ?? `errno ${errno}`;
    super(`${call}${detail ? ` ${detail}` : ""}: ${name}`);
    this.name = "SysError";
    this.errno = errno;
    this.code = name;
  }
}

/** Give the free memory glibc's malloc holds back to the system (what Buffers freed by a GC left). */
export function mallocTrim(): void {
  load().mallocTrim(0);
}

const PR_SET_CHILD_SUBREAPER = 36;
const WNOHANG = 1;

/** Make this process the reaper of orphaned descendants (their exits come to us, not to init). */
export function setChildSubreaper(): void {
  const c = load();
  if (c.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) !== 0) throw new SysError("prctl(PR_SET_CHILD_SUBREAPER)", c.errno());
}

export interface WaitResult {
  pid: number;
  /** Exit code, or 128 + signal for a signalled process (containerd's convention). */
  exitStatus: number;
}

/** waitpid(pid, WNOHANG): the exit when `pid` has exited, undefined while it runs or when it is not our child. */
export function reapPid(pid: number): WaitResult | undefined {
  const c = load();
  const st = [0];
  const r = c.waitpid(pid, st, WNOHANG) as number;
  if (r !== pid) return undefined;
  const status = st[0]!;
  const sig = status & 0x7f;
  return { pid, exitStatus: sig === 0 ? (status >> 8) & 0xff : 128 + sig };
}

export function mkfifo(path: string, mode = 0o700): void {
  const c = load();
  if (c.mkfifo(path, mode) !== 0) throw new SysError("mkfifo", c.errno(), path);
}

const O_CLOEXEC = 0o2000000;

/** A pipe (close-on-exec): [read end, write end]. */
export function pipe(): [number, number] {
  const c = load();
  const fds = Buffer.alloc(8);
  if (c.pipe2(fds, O_CLOEXEC) !== 0) throw new SysError("pipe2", c.errno());
  return [fds.readInt32LE(0), fds.readInt32LE(4)];
}

const F_DUPFD_CLOEXEC = 1030;

/** dup(2), close-on-exec. */
export function dupFd(fd: number): number {
  const c = load();
  const r = c.fcntl(fd, F_DUPFD_CLOEXEC, 0) as number;
  if (r < 0) throw new SysError("fcntl(F_DUPFD_CLOEXEC)", c.errno());
  return r;
}

/** A new pseudo-terminal: its master (close-on-exec) and the path of its slave. */
export function openPty(): { master: number; slave: string } {
  const c = load();
  const master = c.posix_openpt(0o2 | 0o400 | O_CLOEXEC) as number; // O_RDWR | O_NOCTTY
  if (master < 0) throw new SysError("posix_openpt", c.errno());
  if (c.grantpt(master) !== 0 || c.unlockpt(master) !== 0) {
    const e = c.errno();
    fs.closeSync(master);
    throw new SysError("unlockpt", e);
  }
  return { master, slave: c.ptsname(master) as string };
}

export function mount(source: string, target: string, fstype: string, flags: number, data: string): void {
  const c = load();
  if (c.mount(source, target, fstype, flags, data || null) !== 0) {
    throw new SysError("mount", c.errno(), `${fstype} ${source} on ${target}`);
  }
}

export const MNT_DETACH = 2;
export const UMOUNT_NOFOLLOW = 8;

/** umount2; EINVAL (not a mount point) and ENOENT are reported as false. */
export function unmount(target: string, flags = 0): boolean {
  const c = load();
  if (c.umount2(target, flags) === 0) return true;
  const e = c.errno();
  if (e === 22 || e === 2) return false;
  throw new SysError("umount", e, target);
}

const MSG_CMSG_CLOEXEC = 0x40000000;
const SOL_SOCKET = 1;
const SCM_RIGHTS = 1;

/**
 * One recvmsg on a (non-blocking) unix socket fd: the data and the first passed descriptor.
 * Returns undefined when nothing is there yet (EAGAIN).
 */
export function receiveFd(sockFd: number): { data: string; fd: number } | undefined {
  const c = load();
  const data = Buffer.alloc(4096);
  const ctrl = Buffer.alloc(64);
  const n = Number(c.recvmsg(sockFd, { name: null, namelen: 0, iov: [{ base: data, len: data.length }], iovlen: 1, control: ctrl, controllen: ctrl.length, flags: 0 }, MSG_CMSG_CLOEXEC));
  if (n < 0) {
    const e = c.errno();
    if (e === 11 || e === 4) return undefined;
    throw new SysError("recvmsg", e);
  }
  const len = Number(ctrl.readBigUInt64LE(0));
  if (len < 20 || ctrl.readInt32LE(8) !== SOL_SOCKET || ctrl.readInt32LE(12) !== SCM_RIGHTS) {
    throw new SysError("recvmsg", 22, "no file descriptor in the message");
  }
  return { data: data.subarray(0, n).toString(), fd: ctrl.readInt32LE(16) };
}

const TIOCSWINSZ = 0x5414;

export function setWinsize(fd: number, cols: number, rows: number): void {
  const c = load();
  const ws = Buffer.alloc(8);
  ws.writeUInt16LE(rows & 0xffff, 0);
  ws.writeUInt16LE(cols & 0xffff, 2);
  if (c.ioctl(fd, TIOCSWINSZ, ws) !== 0) throw new SysError("ioctl(TIOCSWINSZ)", c.errno());
}

/** mount(2) flags by containerd's option names. */
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
  MS_PRIVATE: 0x40000,
  MS_SLAVE: 0x80000,
  MS_SHARED: 0x100000,
  MS_RELATIME: 0x200000,
  MS_STRICTATIME: 0x1000000,
} as const;
