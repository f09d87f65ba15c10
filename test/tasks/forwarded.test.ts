/** The task manager's wait for a shim's forwarded /tasks/delete (services/tasks/src/runtime/forwarded). */
import * as assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ForwardedDeletes } from "#services/tasks/src/runtime/forwarded";

describe("tasks - forwarded /tasks/delete", () => {
  it("an event forwarded before or during the wait ends it; another task's does not", async () => {
    const f = new ForwardedDeletes();
    const early = f.expect("ns", "a");
    f.seen("ns", "a");
    await early.wait(60_000);

    const during = f.expect("ns", "b");
    let done = false;
    const p = during.wait(60_000).then(() => (done = true));
    f.seen("other", "b");
    f.seen("ns", "c");
    await new Promise((r) => setImmediate(r));
    assert.equal(done, false, "events of other tasks do not end the wait");
    f.seen("ns", "b");
    await p;
    assert.equal(done, true);
  });

  it("without the event the wait gives up; a cancelled expectation ignores later events", async () => {
    const f = new ForwardedDeletes();
    await f.expect("ns", "a").wait(10);
    const c = f.expect("ns", "b");
    c.cancel();
    f.seen("ns", "b"); // nobody waits: no effect
    await c.wait(10);
  });
});
