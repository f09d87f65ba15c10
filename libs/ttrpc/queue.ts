/** Messages of one stream, pushed by the connection's reader and consumed by one async iteration. */
export class MessageQueue<T> implements AsyncIterable<T> {
  private readonly items: T[] = [];
  private done = false;
  private error?: Error;
  private wake?: () => void;

  push(m: T): void {
    this.items.push(m);
    this.wake?.();
  }

  /** No more messages; the iteration ends after the queued ones (throwing `err`, if given). */
  end(err?: Error): void {
    if (this.done) return;
    this.done = true;
    this.error = err;
    this.wake?.();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<T> {
    for (;;) {
      if (this.items.length) {
        yield this.items.shift()!;
        continue;
      }
      if (this.done) {
        if (this.error) throw this.error;
        return;
      }
      await new Promise<void>((r) => (this.wake = r));
      this.wake = undefined;
    }
  }
}
