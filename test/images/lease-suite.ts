/**
 * The LeaseManager conformance suite: run against the local manager and against LeaseManagerProxy over a
 * real gRPC server (whose resource holders are themselves reached over gRPC), with containerd's
 * semantics (metadata/leases.go, services/leases).
 */
import * as assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { background, withLease, type CallContext } from "#libs/context";
import { ErrorCodes } from "#libs/errdefs";
import type { LeaseManager } from "#libs/core/leases";
import { rejectsWith } from "../content/suite";
import type { MemoryHolder } from "./fixtures";

export interface LeaseSuiteFixture {
  leases: LeaseManager;
  /** The records the content and snapshots processes keep. */
  content: MemoryHolder;
  snapshots: MemoryHolder;
  gcCalls(): { dirty: number; waits: number };
  cleanup(): Promise<void>;
}

const D = (c: string): string => "sha256:" + c.repeat(64).slice(0, 64);

export function leaseManagerSuite(name: string, make: () => Promise<LeaseSuiteFixture>): void {
  describe(`leases - ${name}`, () => {
    let f: LeaseSuiteFixture;
    const ctx = (ns = "default"): CallContext => background(ns);
    before(async () => {
      f = await make();
    });
    after(async () => {
      await f.cleanup();
    });

    it("requires a namespace", async () => {
      await rejectsWith(f.leases.create(background(), {}), ErrorCodes.FailedPrecondition);
      await rejectsWith(f.leases.list(background()), ErrorCodes.FailedPrecondition);
    });

    it("create with an id, labels and creation time; AlreadyExists for the same id", async () => {
      const t0 = Date.now();
      const l = await f.leases.create(ctx(), { id: "lease-1", labels: { a: "b", "containerd.io/gc.expire": "2999-01-01T00:00:00Z" } });
      assert.equal(l.id, "lease-1");
      assert.deepEqual(l.labels, { a: "b", "containerd.io/gc.expire": "2999-01-01T00:00:00Z" });
      assert.ok(Math.abs(l.createdAt.getTime() - t0) < 5000);
      await rejectsWith(f.leases.create(ctx(), { id: "lease-1" }), ErrorCodes.AlreadyExists, /lease "lease-1": already exists/);
      const all = await f.leases.list(ctx());
      assert.deepEqual(all.find((x) => x.id === "lease-1"), l);
    });

    it("the server generates <nanos>-<base64> ids when none is given", async () => {
      const ids = new Set<string>();
      for (let i = 0; i < 20; i++) ids.add((await f.leases.create(ctx("gen"), {})).id);
      assert.equal(ids.size, 20);
      for (const id of ids) assert.match(id, /^\d{1,9}-[A-Za-z0-9_-]{4}$/);
    });

    it("any non-empty string is an id (ctr images mount uses a path)", async () => {
      const l = await f.leases.create(ctx("paths"), { id: "/tmp/some mount/dir" });
      assert.equal(l.id, "/tmp/some mount/dir");
      await f.leases.delete(ctx("paths"), "/tmp/some mount/dir");
    });

    it("list filters on id and labels; namespaces are isolated", async () => {
      const c = ctx("lease-filters");
      await f.leases.create(c, { id: "x1", labels: { team: "a" } });
      await f.leases.create(c, { id: "x2", labels: { team: "b", extra: "1" } });
      await f.leases.create(c, { id: "y3", labels: {} });
      await f.leases.create(ctx("lease-filters-other"), { id: "x1" });
      const ids = async (...filters: string[]): Promise<string[]> => (await f.leases.list(c, filters)).map((l) => l.id);
      assert.deepEqual(await ids(), ["x1", "x2", "y3"]);
      assert.deepEqual(await ids("id==x2"), ["x2"]);
      assert.deepEqual(await ids("id~=^x"), ["x1", "x2"]);
      assert.deepEqual(await ids("labels.team==a"), ["x1"]);
      assert.deepEqual(await ids("labels.extra"), ["x2"]);
      assert.deepEqual(await ids("labels.team==a", "id==y3"), ["x1", "y3"]);
      await rejectsWith(f.leases.list(c, ["id=="]), ErrorCodes.InvalidArgument);
    });

    it("delete: NotFound when missing, forgets the records, marks gc, sync waits", async () => {
      const c = ctx("lease-delete");
      await rejectsWith(f.leases.delete(c, "nope"), ErrorCodes.NotFound, /lease "nope": not found/);
      await f.leases.create(c, { id: "d1" });
      await f.leases.addResource(c, "d1", { type: "content", id: D("a") });
      const g0 = f.gcCalls();
      await f.leases.delete(c, "d1", { sync: true });
      const g1 = f.gcCalls();
      assert.equal(g1.dirty - g0.dirty, 1);
      assert.equal(g1.waits - g0.waits, 1);
      assert.ok(f.content.deletedLeases.includes("d1"), "the content process forgot what d1 held");
      assert.ok(f.snapshots.deletedLeases.includes("d1"));
      await rejectsWith(f.leases.listResources(c, "d1"), ErrorCodes.NotFound);
      // the id can be used again, and holds nothing
      await f.leases.create(c, { id: "d1" });
      assert.deepEqual(await f.leases.listResources(c, "d1"), []);
    });

    it("resources are routed to the owning process and listed content, ingests, snapshots", async () => {
      const c = ctx("lease-res");
      await f.leases.create(c, { id: "r" });
      await f.leases.addResource(c, "r", { type: "snapshots/overlayfs", id: "key1" });
      await f.leases.addResource(c, "r", { type: "ingests", id: "ref-1" });
      await f.leases.addResource(c, "r", { type: "content", id: D("b") });
      await f.leases.addResource(c, "r", { type: "content", id: D("b") });
      assert.deepEqual(await f.leases.listResources(c, "r"), [
        { type: "content", id: D("b") },
        { type: "ingests", id: "ref-1" },
        { type: "snapshots/overlayfs", id: "key1" },
      ]);
      assert.equal((await f.content.listResources(c, "r")).length, 2);
      assert.deepEqual(await f.snapshots.listResources(c, "r"), [{ type: "snapshots/overlayfs", id: "key1" }]);
      await f.leases.deleteResource(c, "r", { type: "ingests", id: "ref-1" });
      await f.leases.deleteResource(c, "r", { type: "snapshots/overlayfs", id: "key1" });
      await f.leases.deleteResource(c, "r", { type: "snapshots/overlayfs", id: "never-added" });
      assert.deepEqual(await f.leases.listResources(c, "r"), [{ type: "content", id: D("b") }]);
    });

    it("resource errors: unknown lease, bad type, bad digest", async () => {
      const c = ctx("lease-res-err");
      await rejectsWith(f.leases.addResource(c, "none", { type: "content", id: D("c") }), ErrorCodes.NotFound, /lease "none": not found/);
      await rejectsWith(f.leases.listResources(c, "none"), ErrorCodes.NotFound);
      await rejectsWith(f.leases.deleteResource(c, "none", { type: "content", id: D("c") }), ErrorCodes.NotFound);
      await f.leases.create(c, { id: "e" });
      await rejectsWith(f.leases.addResource(c, "e", { type: "containers", id: "x" }), ErrorCodes.NotImplemented, /resource type containers not supported yet/);
      await rejectsWith(f.leases.addResource(c, "e", { type: "content", id: "not-a-digest" }), ErrorCodes.InvalidArgument);
      await rejectsWith(f.leases.addResource(c, "e", { type: "content/x", id: D("c") }), ErrorCodes.InvalidArgument);
      await rejectsWith(f.leases.addResource(c, "e", { type: "snapshots", id: "k" }), ErrorCodes.InvalidArgument);
      assert.deepEqual(await f.leases.listResources(c, "e"), []);
    });

    it("writes in other processes under the lease show up in ListResources", async () => {
      const c = ctx("lease-writes");
      const l = await f.leases.create(c, {});
      // what the content process does when a write carries containerd-lease
      await f.content.addResource(withLease(c, l.id), l.id, { type: "content", id: D("d") });
      await f.snapshots.addResource(withLease(c, l.id), l.id, { type: "snapshots/native", id: "n1" });
      assert.deepEqual(await f.leases.listResources(c, l.id), [
        { type: "content", id: D("d") },
        { type: "snapshots/native", id: "n1" },
      ]);
    });

    it("a holder that is down makes ListResources fail, and deletion still succeeds", async () => {
      const c = ctx("lease-down");
      await f.leases.create(c, { id: "dn" });
      f.snapshots.down = true;
      try {
        await rejectsWith(f.leases.listResources(c, "dn"), ErrorCodes.Unavailable);
        await f.leases.delete(c, "dn");
        await rejectsWith(f.leases.delete(c, "dn"), ErrorCodes.NotFound);
      } finally {
        f.snapshots.down = false;
      }
    });
  });
}
