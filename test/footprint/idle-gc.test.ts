/**
 * libs/service/idle-gc.ts, in this process: garbage left by a burst of work is collected once allocation
 * stops, without any allocation to prompt V8; while allocation goes on, it leaves collection to V8.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import * as v8 from "node:v8";
import { startIdleGc } from "#libs/service/idle-gc";
import { sleep, waitFor } from "../harness";

const MiB = 1024 * 1024;
const used = (): number => v8.getHeapStatistics().used_heap_size;

/** About `mib` MiB of small objects, kept long enough to reach the old generation. */
async function burst(mib: number): Promise<unknown[]> {
  const keep: unknown[] = [];
  for (let i = 0; i < mib * 1024; i++) keep.push({ i, a: new Array(120).fill(i) });
  await sleep(50);
  for (let i = 0; i < 2000; i++) keep.push(new Array(64).fill(i)); // a few scavenges: survivors are promoted
  return keep;
}

describe("idle GC", () => {
  it("collects what a finished burst left behind, within a few checks", async () => {
    const stop = startIdleGc({ checkMs: 100, growthBytes: 4 * MiB, quietBytes: 1 * MiB });
    try {
      const floor = used();
      let garbage: unknown[] | undefined = await burst(24);
      const peak = used();
      assert.ok(peak - floor > 12 * MiB, `the burst took ${((peak - floor) / MiB).toFixed(1)} MiB`);
      garbage = undefined;
      void garbage;
      const after = await waitFor("the idle collection", () => (used() < floor + 8 * MiB ? used() : undefined), 5000, 50);
      assert.ok(after < peak - 12 * MiB);
    } finally {
      stop();
    }
  });
});
