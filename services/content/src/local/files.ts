/** Small promise wrappers over the callback fs API (cheaper than FileHandle for hot paths). */
import * as fs from "node:fs";

export function openFile(p: string, flags: string | number, mode = 0o644): Promise<number> {
  return new Promise((resolve, reject) => fs.open(p, flags, mode, (err, fd) => (err ? reject(err) : resolve(fd))));
}

export function closeFile(fd: number): Promise<void> {
  return new Promise((resolve, reject) => fs.close(fd, (err) => (err ? reject(err) : resolve())));
}

export function fsyncFile(fd: number): Promise<void> {
  return new Promise((resolve, reject) => fs.fsync(fd, (err) => (err ? reject(err) : resolve())));
}

export function fdatasyncFile(fd: number): Promise<void> {
  return new Promise((resolve, reject) => fs.fdatasync(fd, (err) => (err ? reject(err) : resolve())));
}

export function fstatFile(fd: number): Promise<fs.Stats> {
  return new Promise((resolve, reject) => fs.fstat(fd, (err, st) => (err ? reject(err) : resolve(st))));
}

export function ftruncateFile(fd: number, len: number): Promise<void> {
  return new Promise((resolve, reject) => fs.ftruncate(fd, len, (err) => (err ? reject(err) : resolve())));
}

/** Read up to `length` bytes at `position`; resolves with the count. */
export function readAt(fd: number, buf: Uint8Array, offset: number, length: number, position: number): Promise<number> {
  return new Promise((resolve, reject) => fs.read(fd, buf, offset, length, position, (err, n) => (err ? reject(err) : resolve(n))));
}

/** Write all of `buf` at `position`, looping over short writes. */
export async function writeFullAt(fd: number, buf: Uint8Array, position: number): Promise<void> {
  let off = 0;
  while (off < buf.length) {
    const n = await new Promise<number>((resolve, reject) =>
      fs.write(fd, buf, off, buf.length - off, position + off, (err, w) => (err ? reject(err) : resolve(w))));
    off += n;
  }
}

/** fsync a directory so a rename or create inside it is durable. */
export async function fsyncDir(dir: string): Promise<void> {
  const fd = await openFile(dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
  try {
    await fsyncFile(fd);
  } finally {
    await closeFile(fd);
  }
}

export async function statOrUndefined(p: string): Promise<fs.Stats | undefined>;
/** With `bigint`: nanosecond times (mtimeNs). */
export async function statOrUndefined(p: string, bigint: true): Promise<fs.BigIntStats | undefined>;
export async function statOrUndefined(p: string, bigint = false): Promise<fs.Stats | fs.BigIntStats | undefined> {
  try {
    return await fs.promises.stat(p, { bigint });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw e;
  }
}

export async function unlinkIfExists(p: string): Promise<boolean> {
  try {
    await fs.promises.unlink(p);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw e;
  }
}
