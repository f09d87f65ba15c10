/**
 * Conformance suite for the Snapshotter contract (libs/core/snapshots.ts), run against the local
 * snapshotters and through the gRPC proxy. Mounts are really mounted (and always unmounted).
 */
import { describe, test, before, after } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { background, type CallContext } from "#libs/context";
import { errorCode, ErrorCodes } from "#libs/errdefs";
import type { Mount, SnapshotInfo, Snapshotter } from "#libs/core/snapshots";
import { mountAll, unmountAll } from "#libs/mount";

export interface SnapshotterFixture {
  sn: Snapshotter;
  /** Events published so far (topic + body). */
  events: { topic: string; body: Record<string, unknown> }[];
  close(): Promise<void>;
}

export const nsCtx = (ns = "default", extra: Partial<CallContext> = {}): CallContext => background(ns, extra);

export async function rejectsWith(p: Promise<unknown>, code: string, msg?: RegExp): Promise<void> {
  try {
    await p;
  } catch (e) {
    assert.equal(errorCode(e), code, `expected ${code}, got ${errorCode(e)}: ${(e as Error).message}`);
    if (msg) assert.match((e as Error).message, msg);
    return;
  }
  assert.fail(`expected ${code}, but it succeeded`);
}

const mountBase = fs.mkdtempSync(path.join(os.tmpdir(), "flt-suite-mnt-"));
process.on("exit", () => fs.rmSync(mountBase, { recursive: true, force: true }));

/** Mount `mounts` on a fresh directory, run fn, unmount. */
export async function withMounted<T>(mounts: Mount[], fn: (dir: string) => Promise<T> | T): Promise<T> {
  const dir = fs.mkdtempSync(path.join(mountBase, "m-"));
  mountAll(mounts, dir);
  try {
    return await fn(dir);
  } finally {
    unmountAll(dir);
    fs.rmdirSync(dir);
  }
}

let counter = 0;
const uniq = (p: string): string => `${p}-${process.pid}-${++counter}`;

export function snapshotterSuite(name: string, make: () => Promise<SnapshotterFixture>): void {
  describe(`snapshotter conformance - ${name}`, () => {
    let fx: SnapshotterFixture;
    let sn: Snapshotter;
    const ctx = nsCtx("suite");

    before(async () => {
      fx = await make();
      sn = fx.sn;
    });
    after(async () => {
      await fx?.close();
    });

    test("prepare, write, commit, stat: kinds, parents and labels", async () => {
      const a = uniq("a");
      const base = uniq("base");
      const m = await sn.prepare(ctx, a, "", { labels: { "x/y": "1" } });
      await withMounted(m, (d) => {
        fs.writeFileSync(path.join(d, "hello"), "world");
        fs.mkdirSync(path.join(d, "dir"));
        fs.writeFileSync(path.join(d, "dir", "f"), "f");
      });
      const st = await sn.stat(ctx, a);
      assert.equal(st.kind, "active");
      assert.equal(st.parent, "");
      assert.deepEqual(st.labels, { "x/y": "1" });
      assert.ok(st.created instanceof Date && st.created.getTime() > 0);
      await sn.commit(ctx, base, a, { labels: { committed: "yes" } });
      await rejectsWith(sn.stat(ctx, a), ErrorCodes.NotFound);
      const c = await sn.stat(ctx, base);
      assert.equal(c.kind, "committed");
      assert.deepEqual(c.labels, { committed: "yes" }, "a commit takes only the labels given to it");

      const b = uniq("b");
      const mb = await sn.prepare(ctx, b, base);
      assert.equal((await sn.stat(ctx, b)).parent, base);
      await withMounted(mb, (d) => {
        assert.equal(fs.readFileSync(path.join(d, "hello"), "utf8"), "world");
        fs.writeFileSync(path.join(d, "second"), "2");
        fs.rmSync(path.join(d, "dir"), { recursive: true });
      });
      const top = uniq("top");
      await sn.commit(ctx, top, b);
      const v = uniq("view");
      const mv = await sn.view(ctx, v, top);
      assert.equal((await sn.stat(ctx, v)).kind, "view");
      await withMounted(mv, (d) => {
        assert.deepEqual(fs.readdirSync(d).sort(), ["hello", "second"]);
        assert.throws(() => fs.writeFileSync(path.join(d, "nope"), "x"), /EROFS|read-only/);
      });
      assert.deepEqual(await sn.mounts(ctx, v), mv, "mounts() returns the same mounts again");
      await sn.remove(ctx, v);
      await sn.remove(ctx, top);
      await sn.remove(ctx, base);
    });

    test("error cases: AlreadyExists, NotFound, FailedPrecondition, InvalidArgument", async () => {
      const a = uniq("a");
      const c = uniq("c");
      await sn.prepare(ctx, a, "");
      await rejectsWith(sn.prepare(ctx, a, ""), ErrorCodes.AlreadyExists);
      await rejectsWith(sn.view(ctx, a, ""), ErrorCodes.AlreadyExists);
      await rejectsWith(sn.prepare(ctx, uniq("x"), "missing-parent"), ErrorCodes.NotFound);
      await rejectsWith(sn.prepare(ctx, uniq("x"), a), ErrorCodes.InvalidArgument, /not committed/);
      await rejectsWith(sn.commit(ctx, c, "missing-key"), ErrorCodes.NotFound);
      await sn.commit(ctx, c, a);
      const a2 = uniq("a");
      await sn.prepare(ctx, a2, c);
      await rejectsWith(sn.commit(ctx, c, a2), ErrorCodes.AlreadyExists);
      const v = uniq("v");
      await sn.view(ctx, v, c);
      await rejectsWith(sn.commit(ctx, uniq("n"), v), ErrorCodes.FailedPrecondition, /not active/);
      await rejectsWith(sn.remove(ctx, c), ErrorCodes.FailedPrecondition, /child/);
      await rejectsWith(sn.remove(ctx, "missing"), ErrorCodes.NotFound);
      await rejectsWith(sn.stat(ctx, "missing"), ErrorCodes.NotFound);
      await rejectsWith(sn.mounts(ctx, "missing"), ErrorCodes.NotFound);
      await rejectsWith(sn.mounts(ctx, c), ErrorCodes.FailedPrecondition);
      await rejectsWith(sn.usage(ctx, "missing"), ErrorCodes.NotFound);
      await rejectsWith(sn.prepare(background(), uniq("x"), ""), ErrorCodes.FailedPrecondition, /namespace/);
      await rejectsWith(sn.prepare(ctx, uniq("x"), "", { labels: { k: "v".repeat(5000) } }), ErrorCodes.InvalidArgument);
      await sn.remove(ctx, v);
      await sn.remove(ctx, a2);
      await sn.remove(ctx, c);
    });

    test("update: label masks, whole replacement, invalid paths", async () => {
      const a = uniq("a");
      await sn.prepare(ctx, a, "", { labels: { keep: "1", drop: "2" } });
      let i = await sn.update(ctx, { name: a, labels: { added: "3", drop: "" } }, ["labels.added", "labels.drop"]);
      assert.deepEqual(i.labels, { keep: "1", added: "3" });
      assert.equal(i.kind, "active");
      i = await sn.update(ctx, { name: a, labels: { only: "x" } }, []);
      assert.deepEqual(i.labels, { only: "x" });
      i = await sn.update(ctx, { name: a, labels: { whole: "y" } }, ["labels"]);
      assert.deepEqual(i.labels, { whole: "y" });
      assert.deepEqual((await sn.stat(ctx, a)).labels, { whole: "y" });
      await rejectsWith(sn.update(ctx, { name: a, labels: {} }, ["parent"]), ErrorCodes.InvalidArgument);
      await rejectsWith(sn.update(ctx, { name: "missing", labels: {} }, ["labels.x"]), ErrorCodes.NotFound);
      await sn.remove(ctx, a);
    });

    test("walk: all snapshots of the namespace, filters on kind, name, parent and labels", async () => {
      const wctx = nsCtx(uniq("walk"));
      await sn.prepare(wctx, "a", "", { labels: { tier: "gold" } });
      await sn.commit(wctx, "base", "a", { labels: { tier: "gold" } });
      await sn.prepare(wctx, "b", "base", { labels: { tier: "silver" } });
      await sn.view(wctx, "v", "base");
      const list = async (filters: string[] = []): Promise<string[]> => {
        const out: SnapshotInfo[] = [];
        await sn.walk(wctx, (i) => void out.push(i), filters);
        return out.map((i) => `${i.name}:${i.kind}`).sort();
      };
      assert.deepEqual(await list(), ["b:active", "base:committed", "v:view"]);
      assert.deepEqual(await list(["kind==committed"]), ["base:committed"]);
      assert.deepEqual(await list(["kind==view", "kind==active"]), ["b:active", "v:view"]);
      assert.deepEqual(await list(["parent==base"]), ["b:active", "v:view"]);
      assert.deepEqual(await list(["name~=^b"]), ["b:active", "base:committed"]);
      assert.deepEqual(await list(["labels.tier==gold"]), ["base:committed"]);
      assert.deepEqual(await list(["labels.tier"]), ["b:active", "base:committed"]);
      assert.deepEqual(await list(["kind==active,labels.tier==silver"]), ["b:active"]);
      await rejectsWith(list(["kind=="]), ErrorCodes.InvalidArgument);
      const other: string[] = [];
      await sn.walk(nsCtx(uniq("empty")), (i) => void other.push(i.name));
      assert.deepEqual(other, [], "namespaces are isolated");
      for (const k of ["v", "b", "base"]) await sn.remove(wctx, k);
    });

    test("walk: more than one batch of results", async () => {
      const wctx = nsCtx(uniq("many"));
      for (let i = 0; i < 230; i++) await sn.view(wctx, `k${String(i).padStart(3, "0")}`, "");
      const names: string[] = [];
      await sn.walk(wctx, (i) => void names.push(i.name));
      assert.equal(names.length, 230);
      assert.equal(new Set(names).size, 230);
      for (const n of names) await sn.remove(wctx, n);
    });

    test("namespaces: the same key in two namespaces are different snapshots", async () => {
      const n1 = nsCtx(uniq("ns1"));
      const n2 = nsCtx(uniq("ns2"));
      await sn.prepare(n1, "same", "", { labels: { ns: "1" } });
      await rejectsWith(sn.stat(n2, "same"), ErrorCodes.NotFound);
      await sn.prepare(n2, "same", "", { labels: { ns: "2" } });
      assert.equal((await sn.stat(n1, "same")).labels.ns, "1");
      assert.equal((await sn.stat(n2, "same")).labels.ns, "2");
      await sn.remove(n1, "same");
      assert.equal((await sn.stat(n2, "same")).labels.ns, "2");
      await sn.remove(n2, "same");
    });

    test("usage: bytes and inodes of the snapshot's own changes", async () => {
      const a = uniq("a");
      const m = await sn.prepare(ctx, a, "");
      const empty = await sn.usage(ctx, a);
      await withMounted(m, (d) => {
        fs.writeFileSync(path.join(d, "big"), Buffer.alloc(1 << 20, 7));
        fs.writeFileSync(path.join(d, "small"), "x");
        fs.linkSync(path.join(d, "big"), path.join(d, "big-link"));
      });
      const u = await sn.usage(ctx, a);
      assert.equal(u.inodes - empty.inodes, 2, "two new inodes (the hard link counts once)");
      assert.ok(u.size - empty.size >= 1 << 20, `size grew by at least 1 MiB: ${u.size}`);
      const c = uniq("c");
      await sn.commit(ctx, c, a);
      assert.deepEqual(await sn.usage(ctx, c), u, "a committed snapshot keeps its usage");
      await sn.remove(ctx, c);
    });

    test("remove frees the key and cleanup succeeds", async () => {
      const a = uniq("a");
      await sn.prepare(ctx, a, "");
      await sn.remove(ctx, a);
      await rejectsWith(sn.stat(ctx, a), ErrorCodes.NotFound);
      await sn.prepare(ctx, a, "");
      await sn.remove(ctx, a);
      await sn.cleanup(ctx);
    });

    test("events: prepare, commit and remove", async () => {
      const a = uniq("a");
      const c = uniq("c");
      fx.events.length = 0;
      await sn.prepare(ctx, a, "");
      await sn.commit(ctx, c, a);
      await sn.remove(ctx, c);
      await new Promise((r) => setTimeout(r, 20));
      const seen = fx.events.map((e) => `${e.topic} ${JSON.stringify(e.body)}`);
      assert.deepEqual(seen.map((s) => s.split(" ")[0]), ["/snapshot/prepare", "/snapshot/commit", "/snapshot/remove"]);
      assert.equal(fx.events[0]!.body.key, a);
      assert.equal(fx.events[1]!.body.name, c);
      assert.equal(fx.events[2]!.body.key, c);
    });

    test("a 100-deep chain: prepare and commit each level, the top mounts and shows every layer", async () => {
      const cctx = nsCtx(uniq("chain"));
      let parent = "";
      for (let i = 0; i < 100; i++) {
        await sn.prepare(cctx, `l${i}-active`, parent);
        await sn.commit(cctx, `l${i}`, `l${i}-active`);
        parent = `l${i}`;
      }
      // Only a few layers get files; all 100 lower dirs are in the mount.
      const top = await sn.prepare(cctx, "top", parent);
      await withMounted(top, (d) => {
        fs.writeFileSync(path.join(d, "top-file"), "t");
        assert.ok(fs.existsSync(path.join(d, "top-file")));
      });
      await sn.remove(cctx, "top");
      for (let i = 99; i >= 0; i--) await sn.remove(cctx, `l${i}`);
    });
  });
}
