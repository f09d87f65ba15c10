import * as assert from "node:assert/strict";
import { describe, it } from "node:test";
import { KeyedMutex, waitAtMost } from "#libs/sync";

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

describe("KeyedMutex", () => {
  it("runs sections of one key one at a time, in order; other keys run alongside", async () => {
    const m = new KeyedMutex();
    const log: string[] = [];
    const section = (key: string, name: string) => m.run(key, async () => {
      log.push(`${name}+`);
      await tick();
      await tick();
      log.push(`${name}-`);
      return name;
    });
    const results = await Promise.all([section("a", "a1"), section("a", "a2"), section("b", "b1")]);
    assert.deepEqual(results, ["a1", "a2", "b1"]);
    assert.ok(log.indexOf("a1-") < log.indexOf("a2+"), "a2 waits for a1");
    assert.ok(log.indexOf("b1+") < log.indexOf("a1-"), "b1 does not wait for a1");
  });

  it("a failing section releases the key", async () => {
    const m = new KeyedMutex();
    await assert.rejects(m.run("k", async () => {
      throw new Error("boom");
    }), /boom/);
    assert.equal(await m.run("k", async () => 7), 7);
  });
});

describe("waitAtMost", () => {
  it("returns when the promise settles (either way) or after the limit, and leaves no timer behind", async () => {
    const t0 = Date.now();
    await waitAtMost(Promise.resolve(1), 5000);
    await waitAtMost(Promise.reject(new Error("x")), 5000);
    assert.ok(Date.now() - t0 < 1000);
    const t1 = Date.now();
    await waitAtMost(new Promise(() => undefined), 100);
    assert.ok(Date.now() - t1 >= 90);
    assert.ok(!process.getActiveResourcesInfo().includes("Timeout"), "the limit's timer is cleared");
  });
});
