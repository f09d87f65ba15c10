import * as assert from "node:assert/strict";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { describe, it } from "node:test";
import { background } from "#libs/context";
import { ErrorCodes } from "#libs/errdefs";
import { contentSuite, putBlob, readAll, rejectsWith, sha } from "./suite";
import { localFixture, openLocal } from "./fixtures";

contentSuite("local", localFixture);

describe("content local - crash recovery and layout", () => {
  it("what a crash leaves between steps is cleaned up at start; committed blobs and ingests survive", async () => {
    const ctx = background("default");
    let l = await openLocal();
    const root = l.root;
    try {
      const kept = crypto.randomBytes(100_000);
      const d = await putBlob(l.store, ctx, "kept", kept, { labels: { a: "b" } });
      const partial = crypto.randomBytes(300_000);
      const w = await l.store.writer(ctx, { ref: "partial", total: 1_000_000 });
      await w.write(partial);
      await w.close();
      const blobFile = path.join(root, "blobs", "sha256", d.slice(7));
      assert.equal((fs.statSync(blobFile).mode & 0o777).toString(8), "444", "blobs are read-only");
      await l.close();

      // A blob renamed into place whose transaction never committed, and an ingest directory with no record.
      const orphan = crypto.randomBytes(1000);
      fs.writeFileSync(path.join(root, "blobs", "sha256", sha(orphan).slice(7)), orphan);
      fs.mkdirSync(path.join(root, "ingest", "f".repeat(64)));
      fs.writeFileSync(path.join(root, "ingest", "f".repeat(64), "data"), "stray");

      l = await openLocal(root);
      assert.equal(fs.existsSync(path.join(root, "blobs", "sha256", sha(orphan).slice(7))), false);
      assert.equal(fs.existsSync(path.join(root, "ingest", "f".repeat(64))), false);
      assert.deepEqual((await l.store.info(ctx, d)).labels, { a: "b" });
      assert.ok((await readAll(l.store, ctx, d)).equals(kept));
      const st = await l.store.status(ctx, "partial");
      assert.equal(st.offset, partial.length);
      assert.equal(st.total, 1_000_000);
      const rest = crypto.randomBytes(700_000);
      const w2 = await l.store.writer(ctx, { ref: "partial", total: 1_000_000 });
      assert.equal(w2.digest(), sha(partial));
      await w2.write(rest);
      const whole = Buffer.concat([partial, rest]);
      await w2.commit(1_000_000, sha(whole));
      assert.ok((await readAll(l.store, ctx, sha(whole))).equals(whole));
    } finally {
      await l.close();
      fs.rmSync(root, { recursive: true, force: true });
    }
  });

  it("an ingest whose data file is gone resumes from zero", async () => {
    const ctx = background("default");
    const l = await openLocal();
    try {
      const w = await l.store.writer(ctx, { ref: "lost" });
      await w.write(Buffer.from("half of it"));
      await w.close();
      const dirs = fs.readdirSync(path.join(l.root, "ingest"));
      assert.equal(dirs.length, 1);
      fs.rmSync(path.join(l.root, "ingest", dirs[0]!, "data"));
      assert.equal((await l.store.status(ctx, "lost")).offset, 0);
      const w2 = await l.store.writer(ctx, { ref: "lost" });
      assert.equal((await w2.status()).offset, 0);
      await w2.write(Buffer.from("all of it"));
      await w2.commit(0, sha(Buffer.from("all of it")));
    } finally {
      await l.close();
      fs.rmSync(l.root, { recursive: true, force: true });
    }
  });

  it("the last owner's delete removes the file; shared ingests pin it; abort unpins", async () => {
    const a = background("a");
    const b = background("b");
    const l = await openLocal();
    try {
      const data = crypto.randomBytes(5000);
      const d = await putBlob(l.store, a, "x", data);
      const file = path.join(l.root, "blobs", "sha256", d.slice(7));
      const w = await l.store.writer(b, { ref: "y", expected: d });
      assert.equal((await w.status()).offset, data.length);
      await w.close();
      await l.store.delete(a, d);
      assert.ok(fs.existsSync(file), "the shared ingest in b pins the bytes");
      await rejectsWith(l.store.info(a, d), ErrorCodes.NotFound);
      await l.store.abort(b, "y");
      assert.equal(fs.existsSync(file), false, "nobody holds it any more");
      assert.deepEqual(l.ensured.sort(), ["a", "b"], "the first write in each namespace ensured it");
    } finally {
      await l.close();
      fs.rmSync(l.root, { recursive: true, force: true });
    }
  });

  it("writes to a shared ingest unshare it, starting from the blob's bytes", async () => {
    const a = background("a");
    const b = background("b");
    const l = await openLocal();
    try {
      const data = crypto.randomBytes(3000);
      const d = await putBlob(l.store, a, "x", data);
      const w = await l.store.writer(b, { ref: "y", expected: d });
      await w.write(Buffer.from("more"));
      const st = await w.status();
      assert.equal(st.offset, data.length + 4);
      const whole = Buffer.concat([data, Buffer.from("more")]);
      assert.equal(w.digest(), sha(whole));
      await w.commit(0, "");
      assert.ok((await readAll(l.store, b, sha(whole))).equals(whole));
      assert.ok((await readAll(l.store, a, d)).equals(data));
    } finally {
      await l.close();
      fs.rmSync(l.root, { recursive: true, force: true });
    }
  });

  it("small blobs and records read from memory follow every write: label updates, deletes, re-commits, other namespaces", async () => {
    const a = background("a");
    const b = background("b");
    const l = await openLocal();
    try {
      const data = crypto.randomBytes(2000);
      const d = await putBlob(l.store, a, "x", data, { labels: { v: "1" } });
      for (let i = 0; i < 3; i++) assert.ok((await readAll(l.store, a, d)).equals(data));
      assert.deepEqual((await l.store.info(a, d)).labels, { v: "1" });
      await rejectsWith(l.store.info(b, d), ErrorCodes.NotFound);
      await rejectsWith(l.store.readerAt(b, d), ErrorCodes.NotFound);

      await l.store.update(a, { digest: d, labels: { v: "2" } }, ["labels.v"]);
      assert.deepEqual((await l.store.info(a, d)).labels, { v: "2" }, "an update shows at once");
      (await l.store.info(a, d)).labels.v = "changed by a caller";
      assert.deepEqual((await l.store.info(a, d)).labels, { v: "2" }, "callers get copies");

      await putBlob(l.store, b, "x", data);
      assert.ok((await readAll(l.store, b, d)).equals(data), "a commit in another namespace shows at once");
      await l.store.delete(a, d);
      await rejectsWith(l.store.info(a, d), ErrorCodes.NotFound);
      await rejectsWith(l.store.readerAt(a, d), ErrorCodes.NotFound);
      assert.ok((await readAll(l.store, b, d)).equals(data));
      await l.store.delete(b, d);
      await rejectsWith(l.store.readerAt(b, d), ErrorCodes.NotFound);
      assert.equal(fs.existsSync(path.join(l.root, "blobs", "sha256", d.slice(7))), false);

      await putBlob(l.store, a, "again", data);
      assert.deepEqual((await l.store.info(a, d)).labels, {}, "a re-commit is a new record");
      assert.ok((await readAll(l.store, a, d)).equals(data));
    } finally {
      await l.close();
      fs.rmSync(l.root, { recursive: true, force: true });
    }
  });
});
