/**
 * The ImageStore conformance suite: run against the local store and against ImageStoreProxy over a real
 * gRPC server, so both keep containerd's semantics (metadata/images.go, services/images).
 */
import * as assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { background, type CallContext } from "#libs/context";
import { ErrorCodes } from "#libs/errdefs";
import type { Descriptor, ImageStore } from "#libs/core/images";
import { rejectsWith } from "../content/suite";

export interface ImageSuiteFixture {
  store: ImageStore;
  /** Events published so far. */
  events(): { topic: string; namespace: string; body: Record<string, unknown> }[];
  /** Garbage collections the store asked for: [dirty marks, sync waits]. */
  gcCalls?(): { dirty: number; waits: number };
  cleanup(): Promise<void>;
}

export const dgst = (c: string): string => "sha256:" + c.repeat(64).slice(0, 64);

export const target = (c = "a", extra: Partial<Descriptor> = {}): Descriptor => ({
  mediaType: "application/vnd.oci.image.index.v1+json",
  digest: dgst(c),
  size: 100,
  annotations: {},
  ...extra,
});

export function imageStoreSuite(name: string, make: () => Promise<ImageSuiteFixture>): void {
  describe(`images - ${name}`, () => {
    let f: ImageSuiteFixture;
    const ctx = (ns = "default"): CallContext => background(ns);
    before(async () => {
      f = await make();
    });
    after(async () => {
      await f.cleanup();
    });

    it("requires a namespace", async () => {
      await rejectsWith(f.store.get(background(), "x"), ErrorCodes.FailedPrecondition);
      await rejectsWith(f.store.list(background()), ErrorCodes.FailedPrecondition);
      await rejectsWith(f.store.create(background(), { name: "x", labels: {}, target: target() }), ErrorCodes.FailedPrecondition);
    });

    it("create, get, then AlreadyExists for the same name", async () => {
      const before = Date.now();
      const img = await f.store.create(ctx(), { name: "docker.io/library/a:1", labels: { k: "v", empty: "" }, target: target("a", { annotations: { "org.opencontainers.image.ref.name": "1" } }) });
      assert.equal(img.name, "docker.io/library/a:1");
      assert.deepEqual(img.labels, { k: "v" });
      assert.equal(img.target.digest, dgst("a"));
      assert.equal(img.target.size, 100);
      assert.deepEqual(img.target.annotations, { "org.opencontainers.image.ref.name": "1" });
      assert.ok(img.createdAt.getTime() >= before - 1000 && img.createdAt.getTime() <= Date.now() + 1000, "created_at is stamped by the store");
      assert.equal(img.updatedAt.getTime(), img.createdAt.getTime());
      const got = await f.store.get(ctx(), "docker.io/library/a:1");
      assert.deepEqual(got, img);
      await rejectsWith(f.store.create(ctx(), { name: "docker.io/library/a:1", labels: {}, target: target("b") }), ErrorCodes.AlreadyExists, /image "docker.io\/library\/a:1": already exists/);
      const ev = f.events().filter((e) => e.topic === "/images/create" && e.body.name === "docker.io/library/a:1");
      assert.equal(ev.length, 1);
      assert.equal(ev[0]!.namespace, "default");
      assert.deepEqual(ev[0]!.body.labels, { k: "v" });
    });

    it("get of a missing image is NotFound", async () => {
      await rejectsWith(f.store.get(ctx(), "nope"), ErrorCodes.NotFound, /image "nope": not found/);
    });

    it("validates name, digest, size, media type and labels", async () => {
      await rejectsWith(f.store.create(ctx(), { name: "", labels: {}, target: target() }), ErrorCodes.InvalidArgument);
      await rejectsWith(f.store.create(ctx(), { name: "v1", labels: {}, target: target("a", { digest: "sha256:abc" }) }), ErrorCodes.InvalidArgument, /Target.Digest/);
      await rejectsWith(f.store.create(ctx(), { name: "v2", labels: {}, target: target("a", { digest: "nodigest" }) }), ErrorCodes.InvalidArgument, /Target.Digest/);
      await rejectsWith(f.store.create(ctx(), { name: "v3", labels: {}, target: target("a", { size: 0 }) }), ErrorCodes.InvalidArgument, /Target.Size must be greater than zero/);
      await rejectsWith(f.store.create(ctx(), { name: "v4", labels: {}, target: target("a", { mediaType: "" }) }), ErrorCodes.InvalidArgument, /Target.MediaType must be set/);
      await rejectsWith(f.store.create(ctx(), { name: "v5", labels: { k: "x".repeat(5000) }, target: target() }), ErrorCodes.InvalidArgument, /maximum size/);
      await rejectsWith(f.store.get(ctx(), "v1"), ErrorCodes.NotFound);
    });

    it("namespaces are isolated", async () => {
      await f.store.create(ctx("ns-one"), { name: "iso", labels: {}, target: target("c") });
      await rejectsWith(f.store.get(ctx("ns-two"), "iso"), ErrorCodes.NotFound);
      assert.deepEqual((await f.store.list(ctx("ns-two"))).map((i) => i.name), []);
      await f.store.create(ctx("ns-two"), { name: "iso", labels: {}, target: target("d") });
      assert.equal((await f.store.get(ctx("ns-one"), "iso")).target.digest, dgst("c"));
      assert.equal((await f.store.get(ctx("ns-two"), "iso")).target.digest, dgst("d"));
    });

    it("list sorts by name and filters on name, target.digest, target.mediatype, labels and annotations", async () => {
      const c = ctx("filters");
      await f.store.create(c, { name: "b/img:2", labels: { env: "prod", "com.example/x": "1" }, target: target("1") });
      await f.store.create(c, { name: "a/img:1", labels: { env: "dev" }, target: target("2", { mediaType: "application/vnd.oci.image.manifest.v1+json", annotations: { note: "hi" } }) });
      await f.store.create(c, { name: "c/other", labels: {}, target: target("1") });
      const names = async (...filters: string[]): Promise<string[]> => (await f.store.list(c, filters)).map((i) => i.name);
      assert.deepEqual(await names(), ["a/img:1", "b/img:2", "c/other"]);
      assert.deepEqual(await names(""), ["a/img:1", "b/img:2", "c/other"]);
      assert.deepEqual(await names("name==a/img:1"), ["a/img:1"]);
      assert.deepEqual(await names("name~=img"), ["a/img:1", "b/img:2"]);
      assert.deepEqual(await names(`target.digest==${dgst("1")}`), ["b/img:2", "c/other"]);
      assert.deepEqual(await names("target.mediatype==application/vnd.oci.image.manifest.v1+json"), ["a/img:1"]);
      assert.deepEqual(await names("labels.env"), ["a/img:1", "b/img:2"]);
      assert.deepEqual(await names("labels.env==prod"), ["b/img:2"]);
      assert.deepEqual(await names('labels."com.example/x"==1'), ["b/img:2"]);
      assert.deepEqual(await names("labels.env!=prod"), ["a/img:1", "c/other"]);
      assert.deepEqual(await names("annotations.note==hi"), ["a/img:1"]);
      assert.deepEqual(await names("labels.env==prod", "name==c/other"), ["b/img:2", "c/other"], "several filters are ORed");
      assert.deepEqual(await names("name~=img,labels.env==dev"), ["a/img:1"], "commas are ANDed");
      await rejectsWith(f.store.list(c, ["name=="]), ErrorCodes.InvalidArgument);
    });

    it("update: labels.<k>, labels, annotations, target, and no mask replaces the image", async () => {
      const c = ctx("update");
      const orig = await f.store.create(c, { name: "u", labels: { a: "1", b: "2" }, target: target("e", { annotations: { x: "1" } }) });
      await new Promise((r) => setTimeout(r, 5));
      let u = await f.store.update(c, { name: "u", labels: { a: "9", c: "3" }, target: target("f") }, ["labels.a"]);
      assert.deepEqual(u.labels, { a: "9", b: "2" });
      assert.equal(u.target.digest, dgst("e"), "target untouched");
      assert.equal(u.createdAt.getTime(), orig.createdAt.getTime());
      assert.ok(u.updatedAt.getTime() > orig.updatedAt.getTime(), "updated_at advances");
      u = await f.store.update(c, { name: "u", labels: {}, target: target("f") }, ["labels.b"]);
      assert.deepEqual(u.labels, { a: "9" }, "a masked key missing from labels is deleted");
      u = await f.store.update(c, { name: "u", labels: { z: "26" }, target: target("f") }, ["labels"]);
      assert.deepEqual(u.labels, { z: "26" });
      u = await f.store.update(c, { name: "u", labels: {}, target: target("f", { annotations: { y: "2" } }) }, ["annotations.y"]);
      assert.deepEqual(u.target.annotations, { x: "1", y: "2" });
      u = await f.store.update(c, { name: "u", labels: {}, target: target("f", { annotations: { w: "0" } }) }, ["annotations"]);
      assert.deepEqual(u.target.annotations, { w: "0" });
      assert.equal(u.target.digest, dgst("e"));
      u = await f.store.update(c, { name: "u", labels: {}, target: target("f", { size: 7 }) }, ["target"]);
      assert.equal(u.target.digest, dgst("f"));
      assert.equal(u.target.size, 7);
      assert.deepEqual(u.labels, { z: "26" });
      u = await f.store.update(c, { name: "u", labels: { whole: "1" }, target: target("9") });
      assert.deepEqual(u.labels, { whole: "1" });
      assert.equal(u.target.digest, dgst("9"));
      assert.equal(u.createdAt.getTime(), orig.createdAt.getTime());
      assert.deepEqual(await f.store.get(c, "u"), u);
      const ev = f.events().filter((e) => e.topic === "/images/update" && e.namespace === "update");
      assert.equal(ev.length, 7);
      assert.deepEqual(ev[ev.length - 1]!.body, { name: "u", labels: { whole: "1" } });
    });

    it("update errors: missing, unknown path, invalid result, empty name", async () => {
      const c = ctx("update-errors");
      await rejectsWith(f.store.update(c, { name: "missing", labels: {}, target: target() }), ErrorCodes.NotFound, /image "missing": not found/);
      await f.store.create(c, { name: "e", labels: {}, target: target() });
      await rejectsWith(f.store.update(c, { name: "e", labels: {}, target: target() }, ["name"]), ErrorCodes.InvalidArgument, /cannot update "name" field on image "e"/);
      await rejectsWith(f.store.update(c, { name: "e", labels: {}, target: target("a", { size: -1 }) }, ["target"]), ErrorCodes.InvalidArgument, /Target.Size/);
      await rejectsWith(f.store.update(c, { name: "", labels: {}, target: target() }), ErrorCodes.InvalidArgument);
      assert.equal((await f.store.get(c, "e")).target.size, 100, "a failed update changes nothing");
    });

    it("delete: NotFound when missing, event, gc marked, sync waits for a collection", async () => {
      const c = ctx("delete");
      await rejectsWith(f.store.delete(c, "nope"), ErrorCodes.NotFound, /image "nope": not found/);
      await f.store.create(c, { name: "d1", labels: {}, target: target("1") });
      await f.store.create(c, { name: "d2", labels: {}, target: target("2") });
      const gc0 = f.gcCalls?.();
      await f.store.delete(c, "d1");
      await rejectsWith(f.store.get(c, "d1"), ErrorCodes.NotFound);
      await f.store.delete(c, "d2", { sync: true });
      if (gc0 && f.gcCalls) {
        const gc1 = f.gcCalls();
        assert.equal(gc1.dirty - gc0.dirty, 2);
        assert.equal(gc1.waits - gc0.waits, 1);
      }
      const ev = f.events().filter((e) => e.topic === "/images/delete" && e.namespace === "delete");
      assert.deepEqual(ev.map((e) => e.body), [{ name: "d1" }, { name: "d2" }]);
    });

    it("delete with a target deletes only while the image points at it", async () => {
      const c = ctx("delete-target");
      await f.store.create(c, { name: "t", labels: {}, target: target("1") });
      await rejectsWith(f.store.delete(c, "t", { target: target("2") }), ErrorCodes.NotFound);
      await f.store.get(c, "t");
      await f.store.delete(c, "t", { target: target("1") });
      await rejectsWith(f.store.get(c, "t"), ErrorCodes.NotFound);
    });

    it("names are any non-empty string", async () => {
      const c = ctx("names");
      for (const n of ["with space", "ünïcødé/😀:tag", "a@sha256:" + "0".repeat(64), "x".repeat(1500)]) {
        await f.store.create(c, { name: n, labels: {}, target: target() });
        assert.equal((await f.store.get(c, n)).name, n);
      }
      assert.equal((await f.store.list(c)).length, 4);
    });
  });
}
