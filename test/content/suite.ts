/**
 * The ContentStore conformance suite: run against the local store and against ContentStoreProxy over a
 * real gRPC server, so both implementations keep containerd's semantics.
 */
import * as assert from "node:assert/strict";
import * as crypto from "node:crypto";
import { after, before, describe, it } from "node:test";
import { background, type CallContext } from "#libs/context";
import { ErrorCodes, errorCode, type ErrorCode } from "#libs/errdefs";
import type { ContentStore, LeaseResourceRecorder } from "#libs/core/content";

export interface SuiteFixture {
  store: ContentStore;
  /** The lease resources of the store under test (reached the same way as the store). */
  leases: LeaseResourceRecorder;
  /** Events the store published so far. */
  events: () => { topic: string; namespace: string; body: Record<string, unknown> }[];
  cleanup(): Promise<void>;
}

export const sha = (b: Uint8Array): string => "sha256:" + crypto.createHash("sha256").update(b).digest("hex");

export function randomBlob(n: number): Buffer {
  return crypto.randomBytes(n);
}

export async function rejectsWith(p: Promise<unknown>, code: ErrorCode, msg?: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.equal(errorCode(e), code, `expected ${code}, got ${String(errorCode(e))}: ${(e as Error).message}`);
    if (msg) assert.match((e as Error).message, msg);
    return true;
  });
}

/** Write `data` under `ref` in chunks and commit it. */
export async function putBlob(store: ContentStore, ctx: CallContext, ref: string, data: Buffer, opts: { expected?: string; total?: number; labels?: Record<string, string>; chunk?: number } = {}): Promise<string> {
  const w = await store.writer(ctx, { ref, total: opts.total ?? data.length, expected: opts.expected ?? "" });
  try {
    const st = await w.status();
    const chunk = opts.chunk ?? 256 * 1024;
    for (let off = st.offset; off < data.length; off += chunk) await w.write(data.subarray(off, Math.min(off + chunk, data.length)));
    await w.commit(data.length, opts.expected ?? "", opts.labels);
  } finally {
    await w.close();
  }
  return sha(data);
}

export async function readAll(store: ContentStore, ctx: CallContext, digest: string): Promise<Buffer> {
  const ra = await store.readerAt(ctx, digest);
  try {
    const out = Buffer.alloc(ra.size);
    let pos = 0;
    while (pos < ra.size) {
      const n = await ra.readAt(out.subarray(pos, Math.min(pos + (1 << 20), ra.size)), pos);
      assert.ok(n > 0, "short read");
      pos += n;
    }
    return out;
  } finally {
    await ra.close();
  }
}

async function list(store: ContentStore, ctx: CallContext, filters?: string[]): Promise<string[]> {
  const out: string[] = [];
  await store.walk(ctx, (i) => void out.push(i.digest), filters);
  return out.sort();
}

export function contentSuite(name: string, setup: () => Promise<SuiteFixture>): void {
  describe(`content suite - ${name}`, () => {
    let fx: SuiteFixture;
    let s: ContentStore;
    let n = 0;
    // Every test gets its own namespace, so tests stay independent.
    const ns = (): CallContext => background(`suite-${process.pid}-${++n}`);

    before(async () => {
      fx = await setup();
      s = fx.store;
    });
    after(async () => {
      await fx.cleanup();
    });

    it("write, commit, info, read back, list", async () => {
      const ctx = ns();
      const data = randomBlob(3 * 1024 * 1024 + 17);
      const d = await putBlob(s, ctx, "w1", data, { expected: sha(data), labels: { a: "1" } });
      const info = await s.info(ctx, d);
      assert.equal(info.digest, d);
      assert.equal(info.size, data.length);
      assert.deepEqual(info.labels, { a: "1" });
      assert.ok(Math.abs(info.createdAt.getTime() - Date.now()) < 60_000);
      assert.ok((await readAll(s, ctx, d)).equals(data));
      assert.deepEqual(await list(s, ctx), [d]);
      assert.deepEqual(await s.listStatuses(ctx), [], "the ingest is gone after commit");
    });

    it("an empty blob commits", async () => {
      const ctx = ns();
      const d = await putBlob(s, ctx, "empty", Buffer.alloc(0));
      assert.equal(d, "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
      assert.equal((await s.info(ctx, d)).size, 0);
    });

    it("readAt honours offsets and the blob's end", async () => {
      const ctx = ns();
      const data = randomBlob(2 * 1024 * 1024 + 5);
      const d = await putBlob(s, ctx, "r", data);
      const ra = await s.readerAt(ctx, d);
      try {
        assert.equal(ra.size, data.length);
        const buf = Buffer.alloc(100);
        assert.equal(await ra.readAt(buf, 1024 * 1024 - 50), 100);
        assert.ok(buf.equals(data.subarray(1024 * 1024 - 50, 1024 * 1024 + 50)));
        assert.equal(await ra.readAt(buf, data.length - 10), 10);
        assert.ok(buf.subarray(0, 10).equals(data.subarray(data.length - 10)));
        assert.equal(await ra.readAt(buf, data.length), 0);
      } finally {
        await ra.close();
      }
    });

    it("a wrong expected digest commits nothing and keeps the ingest", async () => {
      const ctx = ns();
      const data = randomBlob(4096);
      const wrong = sha(Buffer.from("other"));
      const w = await s.writer(ctx, { ref: "bad-digest", total: data.length });
      await w.write(data);
      await rejectsWith(w.commit(data.length, wrong), ErrorCodes.FailedPrecondition, /unexpected commit digest/);
      await rejectsWith(s.info(ctx, sha(data)), ErrorCodes.NotFound);
      await rejectsWith(s.info(ctx, wrong), ErrorCodes.NotFound);
      assert.deepEqual(await list(s, ctx), []);
      const st = await s.status(ctx, "bad-digest");
      assert.equal(st.offset, data.length);
      await s.abort(ctx, "bad-digest");
    });

    it("a wrong size commits nothing", async () => {
      const ctx = ns();
      const data = randomBlob(1000);
      const w = await s.writer(ctx, { ref: "bad-size" });
      await w.write(data);
      await rejectsWith(w.commit(999, ""), ErrorCodes.FailedPrecondition, /size/);
      assert.deepEqual(await list(s, ctx), []);
      await s.abort(ctx, "bad-size");
    });

    it("an existing blob: AlreadyExists for its expected digest, and on a duplicate commit", async () => {
      const ctx = ns();
      const data = randomBlob(5000);
      const d = await putBlob(s, ctx, "first", data);
      await rejectsWith(s.writer(ctx, { ref: "again", expected: d, total: data.length }), ErrorCodes.AlreadyExists);
      // Without an expected digest the duplicate is found only at commit; the ingest is removed.
      await rejectsWith(putBlob(s, ctx, "dup", data), ErrorCodes.AlreadyExists);
      await rejectsWith(s.status(ctx, "dup"), ErrorCodes.NotFound);
      assert.deepEqual(await list(s, ctx), [d]);
    });

    it("an interrupted write resumes at its offset with the right digest", async () => {
      const ctx = ns();
      const data = randomBlob(1024 * 1024 + 333);
      const w1 = await s.writer(ctx, { ref: "resume", total: data.length });
      await w1.write(data.subarray(0, 400_000));
      await w1.close();
      const st = await s.status(ctx, "resume");
      assert.equal(st.offset, 400_000);
      assert.equal(st.total, data.length);
      const w2 = await s.writer(ctx, { ref: "resume", total: data.length });
      assert.equal((await w2.status()).offset, 400_000);
      assert.equal(w2.digest(), sha(data.subarray(0, 400_000)));
      await w2.write(data.subarray(400_000));
      await w2.commit(data.length, sha(data));
      assert.ok((await readAll(s, ctx, sha(data))).equals(data));
    });

    it("truncate restarts an ingest", async () => {
      const ctx = ns();
      const w = await s.writer(ctx, { ref: "trunc" });
      await w.write(Buffer.from("garbage"));
      await w.truncate(0);
      await w.write(Buffer.from("good"));
      await w.commit(4, sha(Buffer.from("good")));
      assert.equal((await s.info(ctx, sha(Buffer.from("good")))).size, 4);
    });

    it("a second writer on a locked ref is Unavailable", async () => {
      const ctx = ns();
      const w = await s.writer(ctx, { ref: "locked" });
      try {
        await rejectsWith(s.writer(ctx, { ref: "locked" }), ErrorCodes.Unavailable, /ref locked|locked/);
      } finally {
        await w.close();
      }
      const w2 = await s.writer(ctx, { ref: "locked" });
      await w2.close();
      await s.abort(ctx, "locked");
    });

    it("blobs are visible only in the namespaces that own them; shared content needs no data", async () => {
      const a = ns();
      const b = ns();
      const data = randomBlob(70_000);
      const d = await putBlob(s, a, "x", data);
      await rejectsWith(s.info(b, d), ErrorCodes.NotFound);
      await rejectsWith(s.readerAt(b, d), ErrorCodes.NotFound);
      assert.deepEqual(await list(s, b), []);
      // The shared-content shortcut: offset == total at the first status, commit without data.
      const w = await s.writer(b, { ref: "y", expected: d, total: data.length });
      const st = await w.status();
      assert.equal(st.offset, data.length);
      assert.equal(st.total, data.length);
      await w.commit(data.length, d);
      assert.equal((await s.info(b, d)).size, data.length);
      await s.delete(a, d);
      await rejectsWith(s.info(a, d), ErrorCodes.NotFound);
      assert.ok((await readAll(s, b, d)).equals(data), "still readable where it is still owned");
      await s.delete(b, d);
    });

    it("labels: set at commit, update one, delete with an empty value, replace all", async () => {
      const ctx = ns();
      const d = await putBlob(s, ctx, "l", randomBlob(10), { labels: { keep: "k", drop: "d" } });
      let i = await s.update(ctx, { digest: d, labels: { new: "n", drop: "" } }, ["labels.new", "labels.drop"]);
      assert.deepEqual(i.labels, { keep: "k", new: "n" });
      i = await s.update(ctx, { digest: d, labels: { only: "o" } }, ["labels"]);
      assert.deepEqual(i.labels, { only: "o" });
      i = await s.update(ctx, { digest: d, labels: { x: "1" } }, []);
      assert.deepEqual(i.labels, { x: "1" });
      assert.deepEqual((await s.info(ctx, d)).labels, { x: "1" });
      await rejectsWith(s.update(ctx, { digest: d, labels: {} }, ["size"]), ErrorCodes.InvalidArgument);
      await rejectsWith(s.update(ctx, { digest: d, labels: { big: "v".repeat(5000) } }, ["labels.big"]), ErrorCodes.InvalidArgument);
      await rejectsWith(s.update(ctx, { digest: sha(Buffer.from("missing")), labels: {} }, ["labels"]), ErrorCodes.NotFound);
    });

    it("walk filters on digest, size and labels; several filters are ORed", async () => {
      const ctx = ns();
      const d1 = await putBlob(s, ctx, "f1", Buffer.from("one"), { labels: { kind: "a", "com.example/x": "y" } });
      const d2 = await putBlob(s, ctx, "f2", Buffer.from("second"), { labels: { kind: "b" } });
      const d3 = await putBlob(s, ctx, "f3", Buffer.from("3"));
      assert.deepEqual(await list(s, ctx, [`digest==${d1}`]), [d1]);
      assert.deepEqual(await list(s, ctx, ["size==6"]), [d2]);
      assert.deepEqual(await list(s, ctx, ["labels.kind==a"]), [d1]);
      assert.deepEqual(await list(s, ctx, ["labels.kind"]), [d1, d2].sort());
      assert.deepEqual(await list(s, ctx, ['labels."com.example/x"==y']), [d1]);
      assert.deepEqual(await list(s, ctx, ["labels.kind!=a"]), [d2, d3].sort());
      assert.deepEqual(await list(s, ctx, ["labels.kind==a", `digest==${d3}`]), [d1, d3].sort());
      assert.deepEqual(await list(s, ctx, ["labels.kind==b,size==6"]), [d2]);
      assert.deepEqual(await list(s, ctx, [""]), [d1, d2, d3].sort());
      await rejectsWith(list(s, ctx, ["labels.kind=="]), ErrorCodes.InvalidArgument);
    });

    it("statuses: list with ref filters, status, abort", async () => {
      const ctx = ns();
      const w1 = await s.writer(ctx, { ref: "layer-sha256:aaa", total: 10 });
      await w1.write(Buffer.from("12345"));
      await w1.close();
      const w2 = await s.writer(ctx, { ref: "config-sha256:bbb" });
      await w2.close();
      const refs = async (f?: string[]): Promise<string[]> => (await s.listStatuses(ctx, f)).map((x) => x.ref).sort();
      assert.deepEqual(await refs(), ["config-sha256:bbb", "layer-sha256:aaa"]);
      assert.deepEqual(await refs([""]), ["config-sha256:bbb", "layer-sha256:aaa"]);
      assert.deepEqual(await refs(["ref==layer-sha256:aaa"]), ["layer-sha256:aaa"]);
      assert.deepEqual(await refs(["ref~=^config-"]), ["config-sha256:bbb"]);
      const st = await s.status(ctx, "layer-sha256:aaa");
      assert.equal(st.offset, 5);
      assert.equal(st.total, 10);
      await s.abort(ctx, "layer-sha256:aaa");
      await rejectsWith(s.status(ctx, "layer-sha256:aaa"), ErrorCodes.NotFound);
      await rejectsWith(s.abort(ctx, "layer-sha256:aaa"), ErrorCodes.NotFound);
      await rejectsWith(s.abort(ctx, "never-existed"), ErrorCodes.NotFound);
      assert.deepEqual(await refs(), ["config-sha256:bbb"]);
      assert.deepEqual((await s.listStatuses(ns())).length, 0, "ingests are per namespace");
      await s.abort(ctx, "config-sha256:bbb");
    });

    it("delete removes from the namespace; a second delete is NotFound", async () => {
      const ctx = ns();
      const d = await putBlob(s, ctx, "del", Buffer.from("bye"));
      await s.delete(ctx, d);
      await rejectsWith(s.info(ctx, d), ErrorCodes.NotFound);
      await rejectsWith(s.delete(ctx, d), ErrorCodes.NotFound);
      // It can be written again afterwards.
      assert.equal(await putBlob(s, ctx, "del", Buffer.from("bye")), d);
    });

    it("bad input: malformed digests, empty ref, missing namespace", async () => {
      const ctx = ns();
      await rejectsWith(s.info(ctx, "sha256:abc"), ErrorCodes.InvalidArgument);
      await rejectsWith(s.info(ctx, "nonsense"), ErrorCodes.InvalidArgument);
      await rejectsWith(s.delete(ctx, "sha256:XYZ"), ErrorCodes.InvalidArgument);
      await rejectsWith(s.readerAt(ctx, "md5:00"), ErrorCodes.InvalidArgument);
      await rejectsWith(s.writer(ctx, { ref: "" }), ErrorCodes.InvalidArgument);
      await rejectsWith(s.writer(ctx, { ref: "x", expected: "sha256:1234" }), ErrorCodes.InvalidArgument);
      await rejectsWith(s.info(background(), sha(Buffer.from("x"))), ErrorCodes.FailedPrecondition);
      assert.deepEqual(await s.listStatuses(ctx), [], "nothing was left behind");
    });

    it("writes under a lease are recorded as the lease's resources", async () => {
      const base = ns();
      const ctx: CallContext = { ...base, lease: "lease-1" };
      const w = await s.writer(ctx, { ref: "leased" });
      await w.write(Buffer.from("leased data"));
      await w.close();
      assert.deepEqual(await fx.leases.listResources(base, "lease-1"), [{ type: "ingests", id: "leased" }]);
      const w2 = await s.writer(ctx, { ref: "leased" });
      await w2.commit(0, "");
      const d = sha(Buffer.from("leased data"));
      assert.deepEqual(await fx.leases.listResources(base, "lease-1"), [{ type: "content", id: d }]);
      assert.deepEqual(await fx.leases.listResources(ns(), "lease-1"), [], "leases are per namespace");
      await fx.leases.deleteLease(base, "lease-1");
      assert.deepEqual(await fx.leases.listResources(base, "lease-1"), []);
      await fx.leases.addResource(base, "lease-2", { type: "content", id: d });
      assert.deepEqual(await fx.leases.listResources(base, "lease-2"), [{ type: "content", id: d }]);
      await fx.leases.deleteResource(base, "lease-2", { type: "content", id: d });
      assert.deepEqual(await fx.leases.listResources(base, "lease-2"), []);
    });

    it("events: /content/create on commit, /content/delete on delete", async () => {
      const ctx = ns();
      const before = fx.events().length;
      const d = await putBlob(s, ctx, "ev", Buffer.from("event"));
      await s.delete(ctx, d);
      const evs = fx.events().slice(before).filter((e) => e.namespace === ctx.namespace);
      assert.deepEqual(evs.map((e) => e.topic), ["/content/create", "/content/delete"]);
      assert.equal(evs[0]!.body.digest, d);
      assert.equal(evs[0]!.body.size, 5);
      assert.equal(evs[1]!.body.digest, d);
    });
  });
}
