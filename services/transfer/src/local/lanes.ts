/**
 * Write priority between the layer downloads of one pull. The unpack needs layers in manifest order,
 * so the first unfinished layer should arrive first. A download (a lane, ranked by layer order)
 * writes its next chunk to the content store only when every lower-ranked lane is idle: not writing,
 * and done with its last chunk at least `idleMs` ago. A lane fed by the network faster than it idles
 * (a registry on the same host, where the downloads only split the CPU between them) keeps the later
 * ones back, so the unpack can start early; a lane waiting for a slow network lets them go on. No
 * chunk waits longer than `maxWaitMs`, so no connection is left idle for long.
 */
export interface Lane {
  /** Run `write`, one chunk of this lane's download, when the lanes before it let it. */
  turn<T>(write: () => Promise<T>): Promise<T>;
  /** The download ended (or failed): it holds no one back any more. */
  close(): void;
}

interface LaneState {
  rank: number;
  writing: boolean;
  lastEnd: number;
}

export class WriteLanes {
  private readonly open = new Set<LaneState>();
  private readonly wakers = new Set<() => void>();

  constructor(private readonly idleMs = 20, private readonly maxWaitMs = 250) {}

  /** When `l` may write: now (0), or the time a lower lane becomes idle unless it writes again. */
  private freeAt(l: LaneState, now: number): number {
    let at = 0;
    for (const o of this.open) {
      if (o === l || o.rank >= l.rank) continue;
      if (o.writing) return Infinity;
      if (o.lastEnd + this.idleMs > now) at = Math.max(at, o.lastEnd + this.idleMs);
    }
    return at;
  }

  private wakeAll(): void {
    for (const w of [...this.wakers]) w();
  }

  lane(rank: number): Lane {
    const l: LaneState = { rank, writing: false, lastEnd: 0 };
    this.open.add(l);
    return {
      turn: async <T>(write: () => Promise<T>): Promise<T> => {
        const deadline = Date.now() + this.maxWaitMs;
        for (;;) {
          const now = Date.now();
          const at = this.freeAt(l, now);
          if (at <= now || now >= deadline) break;
          await new Promise<void>((resolve) => {
            const done = (): void => {
              clearTimeout(timer);
              this.wakers.delete(done);
              resolve();
            };
            const timer = setTimeout(done, Math.max(1, Math.min(at, deadline) - now));
            this.wakers.add(done);
          });
        }
        l.writing = true;
        try {
          return await write();
        } finally {
          l.writing = false;
          l.lastEnd = Date.now();
          this.wakeAll();
        }
      },
      close: () => {
        if (this.open.delete(l)) this.wakeAll();
      },
    };
  }
}
