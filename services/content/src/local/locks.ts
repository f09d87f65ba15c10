/** In-process locks: one writer per ingest ref, and serialisation of commits/deletes per digest. */
import { errUnavailable } from "../../../../libs/errdefs";

/** Refs held by open writers. containerd's local store keeps the same in-process table. */
export class RefLocks {
  private readonly held = new Map<string, number>();

  /** Take `key`, retrying briefly (as containerd does) before failing with Unavailable. */
  async lock(key: string, display: string, attempts = 10): Promise<void> {
    for (let i = 0; ; i++) {
      const since = this.held.get(key);
      if (since === undefined) {
        this.held.set(key, Date.now());
        return;
      }
      if (i + 1 >= attempts) {
        const ms = Date.now() - since;
        throw errUnavailable(`ref ${display} locked for ${(ms / 1000).toFixed(3)}s (since ${new Date(since).toISOString()})`);
      }
      await new Promise((r) => setTimeout(r, Math.floor(Math.random() * (1 << i)) + 1));
    }
  }

  unlock(key: string): void {
    this.held.delete(key);
  }

  isLocked(key: string): boolean {
    return this.held.has(key);
  }
}

/** Runs async sections one at a time per key. */
export class KeyedMutex {
  private readonly tails = new Map<string, Promise<void>>();

  async run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.tails.get(key) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((r) => (release = r));
    const tail = prev.then(() => mine);
    this.tails.set(key, tail);
    await prev;
    try {
      return await fn();
    } finally {
      release();
      if (this.tails.get(key) === tail) this.tails.delete(key);
    }
  }
}
