/** In-process locks: one writer per ingest ref (per-digest serialisation is libs/sync's KeyedMutex). */
import { errUnavailable } from "#libs/errdefs";

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
