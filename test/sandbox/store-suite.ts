/**
 * The SandboxStore conformance suite: run against the local store and against SandboxStoreProxy over a
 * real gRPC server, so both keep containerd's semantics (metadata/sandbox.go).
 */
import * as assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { background } from "#libs/context";
import { ErrorCodes, errorCode, type ErrorCode } from "#libs/errdefs";
import type { SandboxStore } from "#libs/core/sandbox";

export interface StoreFixture {
  store: SandboxStore;
  /** Namespaces the store asked to be created. */
  ensured?: () => string[];
  cleanup(): Promise<void>;
}

export async function rejectsWith(p: Promise<unknown>, code: ErrorCode, msg?: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.equal(errorCode(e), code, `expected ${code}, got ${String(errorCode(e))}: ${(e as Error).message}`);
    if (msg) assert.match((e as Error).message, msg);
    return true;
  });
}

const any = (typeUrl: string, text: string): { typeUrl: string; value: Uint8Array } => ({ typeUrl, value: Buffer.from(text) });

export function sandboxStoreSuite(name: string, make: () => Promise<StoreFixture>): void {
  describe(`sandbox store - ${name}`, () => {
    let f: StoreFixture;
    const ctx = background("ns-a");
    before(async () => {
      f = await make();
    });
    after(async () => {
      await f.cleanup();
    });

    it("sandbox store - create stamps times and round-trips every field", async () => {
      const before = Date.now();
      const sb = await f.store.create(ctx, {
        id: "sb1",
        runtime: { name: "io.containerd.runc.v2", options: any("containerd.runc.v1.Options", "\x08\x01") },
        spec: any("types.containerd.io/opencontainers/runtime-spec/1/Spec", '{"hostname":"pod"}'),
        labels: { a: "1", empty: "" },
        extensions: { ext1: any("x.y.Z", "abc") },
        sandboxer: "podsandbox",
      });
      assert.equal(sb.id, "sb1");
      assert.ok(sb.createdAt.getTime() >= before - 1000);
      assert.equal(sb.createdAt.getTime(), sb.updatedAt.getTime());
      assert.deepEqual(sb.labels, { a: "1" });
      const got = await f.store.get(ctx, "sb1");
      assert.equal(got.runtime.name, "io.containerd.runc.v2");
      assert.equal(got.runtime.options?.typeUrl, "containerd.runc.v1.Options");
      assert.deepEqual(Buffer.from(got.runtime.options!.value), Buffer.from("\x08\x01"));
      assert.equal(Buffer.from(got.spec!.value).toString(), '{"hostname":"pod"}');
      assert.equal(got.extensions.ext1?.typeUrl, "x.y.Z");
      assert.equal(got.sandboxer, "podsandbox");
      assert.deepEqual(got.labels, { a: "1" });
      if (f.ensured) assert.ok(f.ensured().includes("ns-a"));
    });

    it("sandbox store - duplicate id is AlreadyExists, other namespaces are separate", async () => {
      await rejectsWith(f.store.create(ctx, { id: "sb1", runtime: { name: "r" } }), ErrorCodes.AlreadyExists);
      await rejectsWith(f.store.get(background("ns-b"), "sb1"), ErrorCodes.NotFound);
      const other = await f.store.create(background("ns-b"), { id: "sb1", runtime: { name: "r" } });
      assert.equal(other.runtime.name, "r");
      assert.equal((await f.store.list(background("ns-b"))).length, 1);
      await f.store.delete(background("ns-b"), "sb1");
    });

    it("sandbox store - bad input is InvalidArgument, no namespace FailedPrecondition", async () => {
      await rejectsWith(f.store.create(ctx, { id: "bad id!", runtime: { name: "r" } }), ErrorCodes.InvalidArgument, /invalid sandbox ID/);
      await rejectsWith(f.store.create(ctx, { id: "", runtime: { name: "r" } }), ErrorCodes.InvalidArgument);
      await rejectsWith(f.store.create(ctx, { id: "noruntime", runtime: { name: "" } }), ErrorCodes.InvalidArgument, /Runtime.Name must be set/);
      await rejectsWith(f.store.create(ctx, { id: "biglabel", runtime: { name: "r" }, labels: { k: "x".repeat(5000) } }), ErrorCodes.InvalidArgument);
      await rejectsWith(f.store.create(background(), { id: "x", runtime: { name: "r" } }), ErrorCodes.FailedPrecondition);
      await rejectsWith(f.store.list(background()), ErrorCodes.FailedPrecondition);
    });

    it("sandbox store - update by field paths", async () => {
      await f.store.create(ctx, { id: "upd", runtime: { name: "rt" }, labels: { a: "1", b: "2" }, extensions: { e1: any("t.A", "1"), e2: any("t.B", "2") } });
      const first = await f.store.get(ctx, "upd");
      await new Promise((r) => setTimeout(r, 5));
      let u = await f.store.update(ctx, { id: "upd", runtime: { name: "ignored" }, labels: { a: "10", c: "3" } }, ["labels.a", "labels.b", "labels.c"]);
      assert.deepEqual(u.labels, { a: "10", c: "3" });
      assert.equal(u.runtime.name, "rt");
      assert.ok(u.updatedAt.getTime() > first.updatedAt.getTime());
      assert.equal(u.createdAt.getTime(), first.createdAt.getTime());
      u = await f.store.update(ctx, { id: "upd", runtime: { name: "x" }, extensions: { e3: any("t.C", "3") } }, ["extensions.e1", "extensions.e3"]);
      assert.deepEqual(Object.keys(u.extensions).sort(), ["e2", "e3"]);
      u = await f.store.update(ctx, { id: "upd", runtime: { name: "x" }, labels: { only: "1" } }, ["labels"]);
      assert.deepEqual(u.labels, { only: "1" });
      u = await f.store.update(ctx, { id: "upd", runtime: { name: "rt2" } }, ["runtime"]);
      assert.equal(u.runtime.name, "rt2");
      u = await f.store.update(ctx, { id: "upd", runtime: { name: "x" }, spec: any("types.containerd.io/opencontainers/runtime-spec/1/Spec", "{}") }, ["spec"]);
      assert.equal(Buffer.from(u.spec!.value).toString(), "{}");
      await rejectsWith(f.store.update(ctx, { id: "upd", runtime: { name: "x" } }, ["sandboxer"]), ErrorCodes.InvalidArgument, /cannot update "sandboxer"/);
      await rejectsWith(f.store.update(ctx, { id: "upd", runtime: { name: "" } }, ["runtime"]), ErrorCodes.InvalidArgument);
      await rejectsWith(f.store.update(ctx, { id: "nope", runtime: { name: "x" } }, ["labels"]), ErrorCodes.NotFound);
      // No fields: all four replaced, but the runtime name must not change.
      await rejectsWith(f.store.update(ctx, { id: "upd", runtime: { name: "other" } }), ErrorCodes.InvalidArgument, /immutable/);
      u = await f.store.update(ctx, { id: "upd", runtime: { name: "rt2" }, labels: { z: "26" } });
      assert.deepEqual(u.labels, { z: "26" });
      assert.deepEqual(u.extensions, {});
      assert.equal(u.spec, undefined);
      const again = await f.store.get(ctx, "upd");
      assert.deepEqual(again.labels, { z: "26" });
      assert.equal(again.updatedAt.getTime(), u.updatedAt.getTime());
    });

    it("sandbox store - list with filters", async () => {
      const c2 = background("ns-list");
      await f.store.create(c2, { id: "l1", runtime: { name: "io.containerd.runc.v2" }, labels: { app: "web", tier: "front" }, sandboxer: "podsandbox" });
      await f.store.create(c2, { id: "l2", runtime: { name: "io.containerd.kata.v2" }, labels: { app: "db" }, sandboxer: "shim" });
      await f.store.create(c2, { id: "l3", runtime: { name: "io.containerd.runc.v2" }, sandboxer: "podsandbox", extensions: { meta: any("t.M", "m") } });
      const ids = async (...filters: string[]): Promise<string[]> => (await f.store.list(c2, filters)).map((s) => s.id).sort();
      assert.deepEqual(await ids(), ["l1", "l2", "l3"]);
      assert.deepEqual(await ids("id==l2"), ["l2"]);
      assert.deepEqual(await ids("labels.app==web"), ["l1"]);
      assert.deepEqual(await ids("labels.app"), ["l1", "l2"]);
      assert.deepEqual(await ids("runtime.name==io.containerd.runc.v2"), ["l1", "l3"]);
      assert.deepEqual(await ids("sandboxer==shim"), ["l2"]);
      assert.deepEqual(await ids("labels.app==db", "id==l3"), ["l2", "l3"]);
      assert.deepEqual(await ids("runtime.name~=runc,labels.tier==front"), ["l1"]);
      assert.deepEqual(await ids("extensions.meta"), ["l3"]);
      assert.deepEqual(await ids("id!=l1"), ["l2", "l3"]);
      await rejectsWith(f.store.list(c2, ["==x"]), ErrorCodes.InvalidArgument);
      for (const id of ["l1", "l2", "l3"]) await f.store.delete(c2, id);
      assert.deepEqual(await ids(), []);
    });

    it("sandbox store - delete", async () => {
      await f.store.create(ctx, { id: "del", runtime: { name: "r" } });
      await f.store.delete(ctx, "del");
      await rejectsWith(f.store.get(ctx, "del"), ErrorCodes.NotFound);
      await rejectsWith(f.store.delete(ctx, "del"), ErrorCodes.NotFound);
      // The id is free again.
      await f.store.create(ctx, { id: "del", runtime: { name: "r" } });
      await f.store.delete(ctx, "del");
    });
  });
}
