/**
 * libs/lmdb ReadView against a database written by another process (as the gateway reads the owners'):
 * nothing before the database exists (and no directory made for it), every acknowledged write seen by
 * the next read, and a database removed or replaced under it reopened (or no longer read); a view
 * asked for a schema version reads only while the database records that version.
 */
import * as assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { after, describe, it } from "node:test";
import { openServiceDB, ReadView, SCHEMA_VERSION_KEY, stampSchemaVersion } from "#libs/lmdb";

const LMDB_LIB = path.join(__dirname, "..", "..", "libs", "lmdb", "index.js");

/** Run `ops` (put: [key, value] / del: key) in a writer process, each in its own acknowledged transaction. */
function writer(dir: string, ops: ({ put: [string, unknown] } | { del: string })[]): void {
  const script = `
    const { openServiceDB, writeTxn } = require(${JSON.stringify(LMDB_LIB)});
    const db = openServiceDB(${JSON.stringify(dir)});
    (async () => {
      for (const op of ${JSON.stringify(ops)}) {
        if (op.put) await writeTxn(db, () => void db.put(["k", op.put[0]], op.put[1]));
        else await writeTxn(db, () => void db.remove(["k", op.del]));
      }
      await db.close();
    })();`;
  execFileSync(process.execPath, ["-e", script]);
}

describe("lmdb - read views of another process's database", () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "flt-lmdb-view-"));
  after(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it("reads nothing before the database exists, then every acknowledged write; follows a replaced database", async () => {
    const dir = path.join(tmp, "owner");
    const view = new ReadView(() => openServiceDB(dir, "meta.lmdb", true), 20);
    const get = (k: string): unknown => view.read((db) => db.get(["k", k]) ?? null);
    try {
      assert.equal(get("a"), undefined, "no database yet");
      assert.equal(fs.existsSync(dir), false, "a view creates nothing");
      writer(dir, [{ put: ["a", { v: 1 }] }]);
      await new Promise((r) => setTimeout(r, 25));
      assert.deepEqual(get("a"), { v: 1 });
      // Each write is seen by the very next read (the view is open now; no waiting).
      for (let i = 2; i < 6; i++) {
        writer(dir, [{ put: ["a", { v: i, labels: { n: String(i) } }] }]);
        assert.deepEqual(get("a"), { v: i, labels: { n: String(i) } });
      }
      writer(dir, [{ del: "a" }]);
      assert.equal(get("a"), null);
      // The owner's root is wiped and made again: the view finds the new database once it looks again.
      fs.rmSync(dir, { recursive: true, force: true });
      writer(dir, [{ put: ["b", { v: "new" }] }]);
      await new Promise((r) => setTimeout(r, 25));
      assert.deepEqual(get("b"), { v: "new" });
      fs.rmSync(dir, { recursive: true, force: true });
      await new Promise((r) => setTimeout(r, 25));
      assert.equal(get("b"), undefined, "a database gone is not read");
    } finally {
      view.close();
    }
  });

  it("reads only while the database records the schema version asked for", () => {
    const dir = path.join(tmp, "versioned");
    const owner = openServiceDB(dir);
    const view = new ReadView(() => openServiceDB(dir, "meta.lmdb", true), 20, 2);
    const get = (): unknown => view.read((db) => db.get(["k", "a"]) ?? null);
    try {
      owner.putSync(["k", "a"], 1);
      assert.equal(get(), undefined, "no version recorded");
      stampSchemaVersion(owner, 1);
      assert.equal(get(), undefined, "another version");
      stampSchemaVersion(owner, 2);
      assert.equal(owner.get(SCHEMA_VERSION_KEY), 2);
      assert.equal(get(), 1, "the version asked for");
      stampSchemaVersion(owner, 3);
      assert.equal(get(), undefined, "a later version is not read either");
    } finally {
      view.close();
      void owner.close();
    }
  });
});
