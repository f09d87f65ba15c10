/**
 * ContainerStore conformance (containerd's metadata/containers.go semantics), run against the local
 * LMDB store and through the gRPC proxy: validation, Any values byte for byte, masks, filters,
 * timestamps, namespaces, and the /containers/* events.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { background } from "#libs/context";
import { ErrorCodes } from "#libs/errdefs";
import { OCI_SPEC_TYPE_URL, type ContainerInput, type ContainerStore } from "#libs/core/containers";
import { code } from "./helpers";

export interface RecordedEvent {
  topic: string;
  namespace: string;
  event: Record<string, unknown>;
}

export interface SuiteFixture {
  store: ContainerStore;
  events: RecordedEvent[];
  cleanup(): Promise<void>;
}

const spec = (n = 1): { typeUrl: string; value: Uint8Array } => ({
  typeUrl: OCI_SPEC_TYPE_URL,
  // Key order and spacing that a re-marshal would change: the bytes must come back as sent.
  value: Buffer.from(`{"ociVersion":"1.0.2-dev",  "process":{"args":["sh"],"env":["N=${n}"]},"root":{"path":"rootfs"}}`),
});

const base = (id: string, extra: Partial<ContainerInput> = {}): ContainerInput => ({
  id,
  runtime: { name: "io.containerd.runc.v2" },
  spec: spec(),
  ...extra,
});

export function containersSuite(name: string, make: () => Promise<SuiteFixture>): void {
  const ctx = background("suite");
  const withFixture = (title: string, fn: (f: SuiteFixture) => Promise<void>): void => {
    test(`${name} - ${title}`, async () => {
      const f = await make();
      try {
        await fn(f);
      } finally {
        await f.cleanup();
      }
    });
  };

  withFixture("create, get: the spec and runtime options come back byte for byte", async ({ store }) => {
    const options = { typeUrl: "containerd.runc.v1.Options", value: Buffer.from([0x32, 0x04, 0x63, 0x72, 0x75, 0x6e]) };
    const ext = { typeUrl: "example.com/Ext", value: Buffer.from([1, 2, 3]) };
    const c = await store.create(ctx, base("c1", { labels: { a: "1", empty: "" }, image: "img:1", runtime: { name: "io.containerd.runc.v2", options }, snapshotter: "overlayfs", snapshotKey: "c1", extensions: { e: ext }, sandbox: "sb" }));
    assert.ok(c.createdAt.getTime() > 0 && c.createdAt.getTime() === c.updatedAt.getTime());
    const g = await store.get(ctx, "c1");
    assert.deepEqual(Buffer.from(g.spec!.value), Buffer.from(spec().value));
    assert.equal(g.spec!.typeUrl, OCI_SPEC_TYPE_URL);
    assert.deepEqual(Buffer.from(g.runtime.options!.value), options.value);
    assert.equal(g.runtime.options!.typeUrl, options.typeUrl);
    assert.deepEqual(g.labels, { a: "1" }, "empty label values are dropped");
    assert.equal(g.image, "img:1");
    assert.equal(g.snapshotter, "overlayfs");
    assert.equal(g.snapshotKey, "c1");
    assert.equal(g.sandbox, "sb");
    assert.deepEqual(Buffer.from(g.extensions.e!.value), ext.value);
  });

  withFixture("create validates like containerd", async ({ store }) => {
    assert.equal(await code(store.create(ctx, base("bad id"))), ErrorCodes.InvalidArgument);
    assert.equal(await code(store.create(ctx, base("noruntime", { runtime: { name: "" } }))), ErrorCodes.InvalidArgument);
    assert.equal(await code(store.create(ctx, { id: "nospec", runtime: { name: "x.y.z" } })), ErrorCodes.InvalidArgument);
    assert.equal(await code(store.create(ctx, base("keyonly", { snapshotKey: "k" }))), ErrorCodes.InvalidArgument);
    assert.equal(await code(store.create(ctx, base("biglabel", { labels: { k: "v".repeat(5000) } }))), ErrorCodes.InvalidArgument);
    assert.equal(await code(store.create(ctx, base("ok1"))), "ok");
    assert.equal(await code(store.create(ctx, base("ok1"))), ErrorCodes.AlreadyExists);
    assert.equal(await code(store.get(ctx, "nope")), ErrorCodes.NotFound);
    assert.equal(await code(store.delete(ctx, "nope")), ErrorCodes.NotFound);
    assert.equal(await code(store.get(background(), "ok1")), ErrorCodes.FailedPrecondition, "namespace required");
  });

  withFixture("update: label masks, full replace, immutable fields, unknown paths", async ({ store }) => {
    const c = await store.create(ctx, base("u1", { labels: { a: "1", b: "2" }, snapshotter: "overlayfs", snapshotKey: "k1" }));
    await new Promise((r) => setTimeout(r, 5));
    let u = await store.update(ctx, { id: "u1", runtime: { name: "" }, labels: { a: "10", c: "3" } }, ["labels.a", "labels.b", "labels.c"]);
    assert.deepEqual(u.labels, { a: "10", c: "3" });
    assert.ok(u.updatedAt.getTime() > c.updatedAt.getTime());
    assert.equal(u.createdAt.getTime(), c.createdAt.getTime());
    u = await store.update(ctx, { id: "u1", runtime: { name: "" }, labels: { z: "9" } }, ["labels"]);
    assert.deepEqual(u.labels, { z: "9" });
    u = await store.update(ctx, { id: "u1", runtime: { name: "" }, image: "new", spec: spec(2) }, ["image", "spec"]);
    assert.equal(u.image, "new");
    assert.deepEqual(Buffer.from(u.spec!.value), Buffer.from(spec(2).value));
    assert.equal(u.snapshotKey, "k1", "unmasked fields keep their value");
    assert.equal(await code(store.update(ctx, { id: "u1", runtime: { name: "" } }, ["runtime"])), ErrorCodes.InvalidArgument);
    assert.equal(await code(store.update(ctx, { id: "u1", runtime: { name: "other.runtime.v1" }, spec: spec(), snapshotter: "overlayfs" })), ErrorCodes.InvalidArgument, "runtime is immutable");
    assert.equal(await code(store.update(ctx, { id: "u1", runtime: { name: "io.containerd.runc.v2" }, spec: spec(), snapshotter: "native" })), ErrorCodes.InvalidArgument, "snapshotter is immutable");
    const full = await store.update(ctx, { id: "u1", runtime: { name: "io.containerd.runc.v2" }, spec: spec(3), snapshotter: "overlayfs", snapshotKey: "k2", labels: { f: "1" } });
    assert.deepEqual(full.labels, { f: "1" });
    assert.equal(full.snapshotKey, "k2");
    assert.equal(full.image, "", "a full update replaces the image too");
    assert.equal(await code(store.update(ctx, { id: "u1", runtime: { name: "" } }, ["spec"])), ErrorCodes.InvalidArgument, "spec cannot be removed");
    assert.equal(await code(store.update(ctx, { id: "missing", runtime: { name: "" } }, ["labels"])), ErrorCodes.NotFound);
    const ext = await store.update(ctx, { id: "u1", runtime: { name: "" }, extensions: { x: { typeUrl: "t", value: Buffer.from("v") } } }, ["extensions.x"]);
    assert.deepEqual(Object.keys(ext.extensions), ["x"]);
  });

  withFixture("list with filters, in id order, per namespace", async ({ store }) => {
    await store.create(ctx, base("b", { labels: { team: "x" }, image: "busybox" }));
    await store.create(ctx, base("a", { labels: { team: "y" }, runtime: { name: "io.containerd.crun.v2" } }));
    await store.create(ctx, base("c", { labels: { "com.example/k": "v" } }));
    await store.create(background("other"), base("a"));
    assert.deepEqual((await store.list(ctx)).map((c) => c.id), ["a", "b", "c"]);
    assert.deepEqual((await store.list(ctx, ["labels.team==x"])).map((c) => c.id), ["b"]);
    assert.deepEqual((await store.list(ctx, ["labels.team"])).map((c) => c.id), ["a", "b"]);
    assert.deepEqual((await store.list(ctx, ["runtime.name==io.containerd.crun.v2", "image==busybox"])).map((c) => c.id), ["a", "b"]);
    assert.deepEqual((await store.list(ctx, ['labels."com.example/k"==v'])).map((c) => c.id), ["c"]);
    assert.deepEqual((await store.list(ctx, ["id~=^[ab]$"])).map((c) => c.id), ["a", "b"]);
    assert.deepEqual((await store.list(background("other"))).map((c) => c.id), ["a"]);
    assert.equal(await code(store.list(ctx, ["labels.team=="])), ErrorCodes.InvalidArgument);
  });

  withFixture("events: create, update, delete", async ({ store, events }) => {
    await store.create(ctx, base("e1", { image: "img", runtime: { name: "io.containerd.runc.v2", options: { typeUrl: "containerd.runc.v1.Options", value: Buffer.alloc(0) } } }));
    await store.update(ctx, { id: "e1", runtime: { name: "" }, labels: { l: "1" } }, ["labels.l"]);
    await store.delete(ctx, "e1");
    assert.deepEqual(events.map((e) => e.topic), ["/containers/create", "/containers/update", "/containers/delete"]);
    assert.ok(events.every((e) => e.namespace === "suite"));
    assert.equal(events[0]!.event.id, "e1");
    assert.equal(events[0]!.event.image, "img");
    assert.equal((events[0]!.event.runtime as { name: string }).name, "io.containerd.runc.v2");
    assert.deepEqual(events[1]!.event.labels, { l: "1" });
    assert.deepEqual(events[2]!.event, { id: "e1" });
  });
}
