/**
 * The snapshots database's write path: writes queued together share one transaction, each keeps its
 * own result, one that throws undoes only its own changes, and everything acknowledged is on disk
 * (seen by a fresh open of the same files).
 */
import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { openSnapshotsDB, writeTxn } from "#services/snapshots/src/local/db";

const base = fs.mkdtempSync(path.join(os.tmpdir(), "flt-sdb-"));
after(() => fs.rmSync(base, { recursive: true, force: true }));

describe("snapshots db - writeTxn", () => {
  test("concurrent writes: results in order, a failing one leaves no trace, the rest are durable", async () => {
    const dir = path.join(base, "a");
    fs.mkdirSync(dir);
    const db = openSnapshotsDB(dir);
    const writes: Promise<unknown>[] = [];
    for (let i = 0; i < 50; i++) {
      writes.push(writeTxn(db, () => {
        // Each write sees the ones before it (a counter, as the id sequence is kept).
        const n = ((db.get(["q", "x"]) as number | undefined) ?? 0) + 1;
        void db.put(["q", "x"], n);
        void db.put(["s", "x", "ns", `k${i}`], { n });
        if (i === 7) throw new Error("refused");
        return n;
      }));
    }
    const settled = await Promise.allSettled(writes);
    assert.equal(settled[7]!.status, "rejected");
    assert.match(String((settled[7] as PromiseRejectedResult).reason), /refused/);
    const values = settled.filter((s) => s.status === "fulfilled").map((s) => (s as PromiseFulfilledResult<number>).value);
    assert.deepEqual(values, Array.from({ length: 49 }, (_, i) => i + 1), "numbered without a gap: the failed write's put was undone");
    assert.equal(db.get(["s", "x", "ns", "k7"]), undefined);
    await db.close();
    const again = openSnapshotsDB(dir);
    assert.equal(again.get(["q", "x"]), 49);
    assert.deepEqual(again.get(["s", "x", "ns", "k49"]), { n: 49 });
    await again.close();
  });

  test("a write queued while a batch commits goes in the next one", async () => {
    const dir = path.join(base, "b");
    fs.mkdirSync(dir);
    const db = openSnapshotsDB(dir);
    const first = writeTxn(db, () => db.put(["s", "x", "ns", "one"], 1));
    await first;
    const second = await writeTxn(db, () => {
      void db.put(["s", "x", "ns", "two"], 2);
      return db.get(["s", "x", "ns", "one"]);
    });
    assert.equal(second, 1);
    assert.equal(db.get(["s", "x", "ns", "two"]), 2);
    await db.close();
  });
});
