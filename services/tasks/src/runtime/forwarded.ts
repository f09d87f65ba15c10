/**
 * Shims publish /tasks/delete themselves, asynchronously (their events travel over the ttrpc events
 * socket while the Delete reply travels over the task API), so the reply can overtake the event. A
 * client that deletes the container right after (`ctr run --rm`) would then see /containers/delete
 * before /tasks/delete. The task manager expects the event before it calls the shim's Delete and waits
 * for it, briefly, before it answers: the event is published first, as in containerd's order.
 */
export class ForwardedDeletes {
  private readonly waiting = new Map<string, () => void>();

  /** Call before the shim's Delete; `wait` resolves once the event is forwarded or after `ms`. */
  expect(namespace: string, id: string): { wait(ms: number): Promise<void>; cancel(): void } {
    const k = `${namespace}\0${id}`;
    let seen = false;
    let wake: (() => void) | undefined;
    const onSeen = (): void => {
      seen = true;
      wake?.();
    };
    this.waiting.set(k, onSeen);
    const cancel = (): void => {
      if (this.waiting.get(k) === onSeen) this.waiting.delete(k);
    };
    return {
      cancel,
      wait: async (ms) => {
        if (!seen) {
          await new Promise<void>((resolve) => {
            const t = setTimeout(resolve, ms);
            wake = () => {
              clearTimeout(t);
              resolve();
            };
          });
        }
        cancel();
      },
    };
  }

  /** A shim's /tasks/delete for `id` in `namespace` has been published. */
  seen(namespace: string, id: string): void {
    this.waiting.get(`${namespace}\0${id}`)?.();
  }
}
