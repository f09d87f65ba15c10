/** Small concurrency and content helpers for the transferrers. */
import { randomBytes } from "node:crypto";
import type { CallContext } from "#libs/context";
import type { ContentStore } from "#libs/core/content";
import { errInvalidArgument } from "#libs/errdefs";

/** A counting semaphore; waiters are served in arrival order. */
export class Semaphore {
  private active = 0;
  private readonly queue: (() => void)[] = [];
  constructor(private readonly limit: number) {}

  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.active >= this.limit) await new Promise<void>((r) => this.queue.push(r));
    else this.active++;
    try {
      return await fn();
    } finally {
      const next = this.queue.shift();
      if (next) next();
      else this.active--;
    }
  }
}

/** Serialises work per key (e.g. one unpack per chain ID at a time). */
export { KeyedMutex } from "#libs/sync";

/** containerd's uniquePart for unpack keys: `<nanosecond>-<base64url of 3 random bytes>`. */
export function uniquePart(): string {
  const ns = Number(process.hrtime.bigint() % 1_000_000_000n);
  return `${ns}-${randomBytes(3).toString("base64url")}`;
}

export const READ_WINDOW = 1 << 20;

/** A whole (small) blob from the content store. */
export async function readBlob(content: ContentStore, ctx: CallContext, digest: string, maxSize = 16 << 20): Promise<Buffer> {
  const r = await content.readerAt(ctx, digest);
  try {
    if (r.size > maxSize) throw errInvalidArgument(`blob ${digest} is ${r.size} bytes, more than ${maxSize}`);
    const buf = Buffer.alloc(r.size);
    let off = 0;
    while (off < r.size) {
      const n = await r.readAt(buf.subarray(off, Math.min(r.size, off + READ_WINDOW)), off);
      if (n <= 0) throw errInvalidArgument(`blob ${digest}: short read at ${off} of ${r.size}`);
      off += n;
    }
    return buf;
  } finally {
    await r.close();
  }
}

/** A blob as a stream of windows, reading one window ahead. */
export async function* blobChunks(content: ContentStore, ctx: CallContext, digest: string, start = 0): AsyncGenerator<Buffer> {
  const r = await content.readerAt(ctx, digest);
  try {
    const read = async (off: number): Promise<Buffer> => {
      const buf = Buffer.allocUnsafe(Math.min(READ_WINDOW, r.size - off));
      let n = 0;
      while (n < buf.length) {
        const k = await r.readAt(buf.subarray(n), off + n);
        if (k <= 0) throw errInvalidArgument(`blob ${digest}: short read at ${off + n} of ${r.size}`);
        n += k;
      }
      return buf;
    };
    let off = start;
    let next = off < r.size ? read(off) : undefined;
    while (next) {
      const cur = await next;
      off += cur.length;
      next = off < r.size ? read(off) : undefined;
      next?.catch(() => undefined);
      yield cur;
    }
  } finally {
    await r.close();
  }
}

/** `now + ms` as RFC 3339 UTC without fractional seconds, as containerd writes gc.expire. */
export function rfc3339(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z");
}
