/**
 * A readers-writer gate between lease deletions (shared) and the collector's mark window (exclusive).
 * A lease deletion hands protection over to what the client created under the lease (an image, a
 * container, labels on content); the collector reads every object first and the leases after, so a
 * deletion must not land between those two reads. A waiting collector goes first (no starvation
 * under a stream of deletions).
 */
export class MarkGate {
  private readers = 0;
  private writer = false;
  private writersWaiting = 0;
  private readonly waiting: (() => void)[] = [];

  private wake(): void {
    const q = this.waiting.splice(0);
    for (const w of q) w();
  }

  private async until(cond: () => boolean): Promise<void> {
    while (!cond()) await new Promise<void>((r) => this.waiting.push(r));
  }

  async shared<T>(fn: () => Promise<T>): Promise<T> {
    await this.until(() => !this.writer && this.writersWaiting === 0);
    this.readers++;
    try {
      return await fn();
    } finally {
      this.readers--;
      this.wake();
    }
  }

  async exclusive<T>(fn: () => Promise<T>): Promise<T> {
    this.writersWaiting++;
    try {
      await this.until(() => !this.writer && this.readers === 0);
    } finally {
      this.writersWaiting--;
    }
    this.writer = true;
    try {
      return await fn();
    } finally {
      this.writer = false;
      this.wake();
    }
  }
}
