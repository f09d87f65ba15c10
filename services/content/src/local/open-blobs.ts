/**
 * A small cache of open read-only blob descriptors. ctr reads blobs in 32 KiB windows, one Read call
 * each, so opening and closing the file per call would dominate. Entries are evicted least recently
 * used beyond `max` (once no reader holds them) and when a blob's file is removed.
 */
import * as fs from "node:fs";
import { closeFile, fstatFile, openFile } from "./files";

interface Entry {
  fd: number;
  size: number;
  refs: number;
  stale: boolean;
}

export interface OpenBlob {
  readonly fd: number;
  readonly size: number;
  release(): void;
}

export class OpenBlobs {
  private readonly entries = new Map<string, Entry>();
  private readonly opening = new Map<string, Promise<Entry>>();

  constructor(private readonly max = 64) {}

  async acquire(digest: string, file: string): Promise<OpenBlob> {
    let e = this.entries.get(digest);
    if (!e) {
      let p = this.opening.get(digest);
      if (!p) {
        p = (async () => {
          const fd = await openFile(file, fs.constants.O_RDONLY);
          try {
            const st = await fstatFile(fd);
            return { fd, size: st.size, refs: 0, stale: false };
          } catch (err) {
            await closeFile(fd);
            throw err;
          }
        })();
        this.opening.set(digest, p);
        try {
          const opened = await p;
          this.entries.set(digest, opened);
        } finally {
          this.opening.delete(digest);
        }
      }
      e = await p;
    } else {
      // Most recently used goes last.
      this.entries.delete(digest);
      this.entries.set(digest, e);
    }
    const entry = e;
    entry.refs++;
    this.trim();
    let released = false;
    return {
      fd: entry.fd,
      size: entry.size,
      release: () => {
        if (released) return;
        released = true;
        entry.refs--;
        if (entry.stale && entry.refs === 0) void closeFile(entry.fd).catch(() => undefined);
        else this.trim();
      },
    };
  }

  /** The blob's file is gone: close its descriptor once its readers are done. */
  evict(digest: string): void {
    const e = this.entries.get(digest);
    if (!e) return;
    this.entries.delete(digest);
    e.stale = true;
    if (e.refs === 0) void closeFile(e.fd).catch(() => undefined);
  }

  private trim(): void {
    if (this.entries.size <= this.max) return;
    for (const [d, e] of this.entries) {
      if (this.entries.size <= this.max) return;
      if (e.refs === 0) {
        this.entries.delete(d);
        void closeFile(e.fd).catch(() => undefined);
      }
    }
  }

  closeAll(): void {
    for (const d of [...this.entries.keys()]) this.evict(d);
  }
}
