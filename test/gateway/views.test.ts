/**
 * The gateway's read views (services/gateway/src/views.ts) in a whole stack: Content.Info,
 * Containers.Get, Images.Get and Namespaces.Get answered by the gateway give the owner's answer, field
 * for field, follow every acknowledged write at once (made through the gateway with the real `ctr`, or
 * straight to the owner), leave not-found to the owner, and are really answered without the owner (its
 * call counters do not move). A database recording another schema version than the gateway was built
 * with is not read: its owner answers. With `gateway_read_views = false` every lookup reaches its owner.
 */
import * as assert from "node:assert/strict";
import * as crypto from "node:crypto";
import * as path from "node:path";
import { after, before, describe, it } from "node:test";
import { background, type CallContext } from "#libs/context";
import { ErrorCodes } from "#libs/errdefs";
import { RpcClient } from "#libs/grpc/client";
import type { Msg } from "#libs/grpc/server";
import { ContentStoreProxy } from "#libs/clients/content";
import type { ServiceName } from "#libs/config";
import { openServiceDB, SCHEMA_VERSION_KEY, writeTxn } from "#libs/lmdb";
import * as imagesPublic from "#services/images/public";
import { startStack, type Stack, testChannels } from "../harness";
import { handled } from "./helpers";

const CONTENT = "containerd.services.content.v1.Content";
const IMAGES = "containerd.services.images.v1.Images";
const NAMESPACES = "containerd.services.namespaces.v1.Namespaces";
const CONTAINERS = "containerd.services.containers.v1.Containers";
const SNAPSHOTS = "containerd.services.snapshots.v1.Snapshots";
const ROOT_LABEL = { "containerd.io/gc.root": "views-test" };

async function codeOf(p: Promise<unknown>): Promise<{ code: string; message: string }> {
  try {
    await p;
  } catch (e) {
    return { code: String((e as { code?: unknown }).code), message: (e as Error).message };
  }
  assert.fail("expected an error");
}

async function putBlob(s: Stack, ctx: CallContext, data: Buffer): Promise<string> {
  const digest = "sha256:" + crypto.createHash("sha256").update(data).digest("hex");
  const content = new ContentStoreProxy(testChannels.get(s.socket));
  const w = await content.writer(ctx, { ref: `views-${digest.slice(7, 19)}`, total: data.length, expected: digest });
  // A blob another namespace holds is shared (the writer starts at its end), as in containerd.
  if ((await w.status()).offset === 0) await w.write(data);
  await w.commit(data.length, digest, ROOT_LABEL);
  return digest;
}

describe("gateway - lookups answered from the owners' databases", () => {
  let s: Stack;
  const ctx = background("default");
  let gw: (service: string) => RpcClient<string>;
  let owner: (svc: ServiceName, service: string) => RpcClient<string>;

  before(async () => {
    s = await startStack({ logLevel: "warn", metrics: true });
    gw = (service) => new RpcClient(testChannels.get(`unix://${s.socket}`), service);
    owner = (svc, service) => new RpcClient(testChannels.get(s.address(svc)), service);
  });
  after(async () => {
    await s?.stop();
  });

  it("Content.Info: the owner's answer, every label update seen at once, the owner untouched; not found is the owner's", async () => {
    const digest = await putBlob(s, ctx, crypto.randomBytes(4096));
    const viaGw = gw(CONTENT);
    const direct = owner("content", CONTENT);
    assert.deepEqual(await viaGw.unary(ctx, "Info", { digest }), await direct.unary(ctx, "Info", { digest }));
    const before = await handled(s, "content", CONTENT, "Info");
    for (let i = 0; i < 10; i++) {
      // Through the gateway with the real ctr, then straight to the owner: both are seen by the next lookup.
      const r = await s.ctr(["content", "label", digest, `step=ctr-${i}`]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(((await viaGw.unary(ctx, "Info", { digest })) as Msg).info.labels.step, `ctr-${i}`);
      await direct.unary(ctx, "Update", { info: { digest, labels: { step: `direct-${i}` } }, update_mask: { paths: ["labels.step"] } });
      assert.equal(((await viaGw.unary(ctx, "Info", { digest })) as Msg).info.labels.step, `direct-${i}`);
    }
    assert.equal(await handled(s, "content", CONTENT, "Info"), before, "the content process answered no Info");
    // Another namespace does not see the blob: the owner says so, in its words.
    const other = background("views-other");
    const missing = await codeOf(viaGw.unary(other, "Info", { digest }));
    assert.deepEqual(missing, await codeOf(direct.unary(other, "Info", { digest })));
    assert.equal(missing.code, ErrorCodes.NotFound);
    // Removed: gone from the view at once.
    const rm = await s.ctr(["content", "rm", digest]);
    assert.equal(rm.code, 0, rm.stderr);
    const gone = await codeOf(viaGw.unary(ctx, "Info", { digest }));
    assert.equal(gone.code, ErrorCodes.NotFound);
    assert.match(gone.message, new RegExp(`content digest ${digest}: not found`));
    // A malformed request is the owner's to refuse.
    const bad = await codeOf(viaGw.unary(ctx, "Info", { digest: "sha256:nothex" }));
    assert.deepEqual(bad, await codeOf(direct.unary(ctx, "Info", { digest: "sha256:nothex" })));
  });

  it("Content.Read from the blob file while the namespace holds the blob, the owner's answer the moment it does not", async () => {
    const data = Buffer.from(crypto.randomBytes(50_000).toString("hex")); // text: ctr's output is read as a string
    const other = background("views-reads");
    const digest = await putBlob(s, ctx, data);
    await putBlob(s, other, data);
    const read = async (c: CallContext): Promise<Buffer> => {
      const parts: Buffer[] = [];
      for await (const m of gw(CONTENT).serverStream(c, "Read", { digest, offset: 0, size: 0 })) parts.push(m.data as Buffer);
      return Buffer.concat(parts);
    };
    const before = await handled(s, "content", CONTENT, "Read");
    assert.ok((await read(ctx)).equals(data));
    const got = await s.ctr(["content", "get", digest]);
    assert.equal(got.code, 0, got.stderr);
    assert.equal(got.stdout, data.toString());
    assert.equal(await handled(s, "content", CONTENT, "Read"), before, "the content process answered no Read");
    // Removed in one namespace: at once the owner's NotFound there; still read in the other.
    assert.equal((await s.ctr(["content", "rm", digest])).code, 0);
    assert.equal((await codeOf(read(ctx))).code, ErrorCodes.NotFound);
    assert.ok((await read(other)).equals(data));
    await gw(CONTENT).unary(other, "Delete", { digest });
  });

  it("Snapshots.Stat and Mounts: the owner's answers for both snapshotters, labels followed at once, the rest the owner's", async () => {
    const viaGw = gw(SNAPSHOTS);
    const direct = owner("snapshots", SNAPSHOTS);
    for (const sn of ["overlayfs", "native"]) {
      const ctr = async (args: string[]): Promise<string> => {
        const r = await s.ctr(["snapshots", "--snapshotter", sn, ...args]);
        assert.equal(r.code, 0, r.stderr);
        return r.stdout;
      };
      await ctr(["prepare", `${sn}-base-work`, ""]);
      await ctr(["label", `${sn}-base-work`, `containerd.io/gc.root=views`]);
      await ctr(["commit", `${sn}-base`, `${sn}-base-work`]);
      await ctr(["prepare", `${sn}-child`, `${sn}-base`]);
      await ctr(["view", `${sn}-view`, `${sn}-base`]);
      for (const key of [`${sn}-child`, `${sn}-view`]) await ctr(["label", key, `containerd.io/gc.root=views`]);
      const stats = await handled(s, "snapshots", SNAPSHOTS, "Stat");
      const mounts = await handled(s, "snapshots", SNAPSHOTS, "Mounts");
      for (const key of [`${sn}-base`, `${sn}-child`, `${sn}-view`]) {
        const req = { snapshotter: sn, key };
        assert.deepEqual(await viaGw.unary(ctx, "Stat", req), await direct.unary(ctx, "Stat", req), key);
        if (key === `${sn}-base`) {
          // A committed snapshot has no mounts: the owner's FailedPrecondition.
          const e = await codeOf(viaGw.unary(ctx, "Mounts", req));
          assert.deepEqual(e, await codeOf(direct.unary(ctx, "Mounts", req)));
          assert.equal(e.code, ErrorCodes.FailedPrecondition);
        } else assert.deepEqual(await viaGw.unary(ctx, "Mounts", req), await direct.unary(ctx, "Mounts", req), key);
      }
      // ctr's own `mounts` prints what the view answered.
      assert.match(await ctr(["mounts", "/TARGET", `${sn}-child`]), sn === "overlayfs" ? /^mount -t overlay overlay \/TARGET -o index=off,workdir=|^mount -t overlay overlay \/TARGET -o workdir=/ : /^mount -t bind /);
      assert.equal(await handled(s, "snapshots", SNAPSHOTS, "Stat"), stats + 3, "the owner answered only the direct Stats");
      assert.equal(await handled(s, "snapshots", SNAPSHOTS, "Mounts"), mounts + 4, "the owner answered the direct Mounts and both of the committed one's");
      await ctr(["label", `${sn}-child`, "step=1"]);
      assert.equal(((await viaGw.unary(ctx, "Stat", { snapshotter: sn, key: `${sn}-child` })) as Msg).info.labels.step, "1");
      for (const key of [`${sn}-view`, `${sn}-child`, `${sn}-base`]) await ctr(["rm", key]);
      const gone = await codeOf(viaGw.unary(ctx, "Stat", { snapshotter: sn, key: `${sn}-child` }));
      assert.deepEqual(gone, await codeOf(direct.unary(ctx, "Stat", { snapshotter: sn, key: `${sn}-child` })));
      assert.equal(gone.code, ErrorCodes.NotFound);
    }
    // A snapshotter nobody loaded is the owner's to refuse.
    const e = await codeOf(viaGw.unary(ctx, "Stat", { snapshotter: "zfs", key: "x" }));
    assert.deepEqual(e, await codeOf(direct.unary(ctx, "Stat", { snapshotter: "zfs", key: "x" })));
  });

  it("Containers.Get, Images.Get and Namespaces.Get: the owners' answers, labels followed at once", async () => {
    const spec = { type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec", value: Buffer.from(JSON.stringify({ ociVersion: "1.0.2", process: { args: ["true"] } })) };
    await gw(CONTAINERS).unary(ctx, "Create", { container: { id: "views-c", runtime: { name: "io.containerd.runc.v2" }, spec, snapshotter: "overlayfs", labels: { a: "1" } } });
    const digest = await putBlob(s, ctx, Buffer.from(JSON.stringify({ schemaVersion: 2, layers: [] })));
    await gw(IMAGES).unary(ctx, "Create", { image: { name: "example.com/views:1", target: { media_type: "application/vnd.oci.image.manifest.v1+json", digest, size: 30 }, labels: { a: "1" } } });
    assert.equal((await s.ctr(["namespaces", "create", "views-ns", "a=1"])).code, 0);

    const cases: { svc: ServiceName; service: string; req: Msg; field: string; label: string[] }[] = [
      { svc: "tasks", service: CONTAINERS, req: { id: "views-c" }, field: "container", label: ["containers", "label", "views-c"] },
      { svc: "images", service: IMAGES, req: { name: "example.com/views:1" }, field: "image", label: ["images", "label", "example.com/views:1"] },
      { svc: "images", service: NAMESPACES, req: { name: "views-ns" }, field: "namespace", label: ["namespaces", "label", "views-ns"] },
    ];
    for (const c of cases) {
      const method = "Get";
      const before = await handled(s, c.svc, c.service, method);
      const viaGw = (await gw(c.service).unary(ctx, method, c.req)) as Msg;
      assert.deepEqual(viaGw, await owner(c.svc, c.service).unary(ctx, method, c.req), c.service);
      for (let i = 0; i < 5; i++) {
        const r = await s.ctr([...c.label, `a=${i + 2}`]);
        assert.equal(r.code, 0, r.stderr);
        assert.equal(((await gw(c.service).unary(ctx, method, c.req)) as Msg)[c.field].labels.a, String(i + 2), c.service);
      }
      // The owner answered only the direct Get above.
      assert.equal(await handled(s, c.svc, c.service, method), before + 1, c.service);
    }
    // The spec comes back byte for byte through the view.
    const got = ((await gw(CONTAINERS).unary(ctx, "Get", { id: "views-c" })) as Msg).container;
    assert.deepEqual(Buffer.from(got.spec.value), spec.value);
    const info = await s.ctr(["containers", "info", "views-c"]);
    assert.equal(info.code, 0, info.stderr);
    assert.match(info.stdout, /"a": "6"/);

    // Removed: each lookup is the owner's answer at once: NotFound, or for a namespace (as in containerd)
    // one with no labels.
    assert.equal((await s.ctr(["containers", "rm", "views-c"])).code, 0);
    assert.equal((await s.ctr(["images", "rm", "example.com/views:1"])).code, 0);
    assert.equal((await s.ctr(["namespaces", "rm", "views-ns"])).code, 0);
    for (const c of cases) {
      if (c.service === NAMESPACES) assert.deepEqual(((await gw(c.service).unary(ctx, "Get", c.req)) as Msg).namespace.labels ?? {}, {});
      else assert.equal((await codeOf(gw(c.service).unary(ctx, "Get", c.req))).code, ErrorCodes.NotFound, c.service);
    }
    await gw(CONTENT).unary(ctx, "Delete", { digest });
  });

  it("a database recording another schema version is not read: the owner answers until the versions match again", async () => {
    const digest = await putBlob(s, ctx, Buffer.from(JSON.stringify({ schemaVersion: 2, layers: [] })));
    const name = "example.com/views-schema:1";
    await gw(IMAGES).unary(ctx, "Create", { image: { name, target: { media_type: "application/vnd.oci.image.manifest.v1+json", digest, size: 30 } } });
    const gets = (): Promise<number> => handled(s, "images", IMAGES, "Get");
    // Another build of the images process (a newer schema) records its own version.
    const stamp = async (version: number): Promise<void> => {
      const db = openServiceDB(path.join(s.root, "images"), imagesPublic.DB_FILE);
      try {
        await writeTxn(db, () => void db.put(SCHEMA_VERSION_KEY, version));
      } finally {
        await db.close();
      }
    };
    const expected = await owner("images", IMAGES).unary(ctx, "Get", { name });
    let before = await gets();
    assert.deepEqual(await gw(IMAGES).unary(ctx, "Get", { name }), expected);
    assert.equal(await gets(), before, "the view answered while the versions match");
    try {
      await stamp(imagesPublic.SCHEMA_VERSION + 1);
      before = await gets();
      assert.deepEqual(await gw(IMAGES).unary(ctx, "Get", { name }), expected);
      // `ctr images tag` looks the source up with Images.Get.
      const tagged = await s.ctr(["images", "tag", name, `${name}-copy`]);
      assert.equal(tagged.code, 0, tagged.stderr);
      assert.equal(await gets(), before + 2, "the images process answered both Gets");
      const nsGets = await handled(s, "images", NAMESPACES, "Get");
      await gw(NAMESPACES).unary(ctx, "Get", { name: "default" });
      assert.equal(await handled(s, "images", NAMESPACES, "Get"), nsGets + 1, "the images process answered Namespaces.Get");
    } finally {
      await stamp(imagesPublic.SCHEMA_VERSION);
    }
    before = await gets();
    assert.deepEqual(await gw(IMAGES).unary(ctx, "Get", { name }), expected);
    assert.equal(await gets(), before, "the view answers again once the versions match");
    assert.equal((await s.ctr(["images", "rm", name, `${name}-copy`])).code, 0);
    await gw(CONTENT).unary(ctx, "Delete", { digest });
  });
});

describe("gateway - read views turned off", () => {
  let s: Stack;
  before(async () => {
    s = await startStack({ logLevel: "warn", metrics: true, readViews: false });
  });
  after(async () => {
    await s?.stop();
  });

  it("every lookup reaches its owner", async () => {
    const ctx = background("default");
    const digest = await putBlob(s, ctx, crypto.randomBytes(512));
    const before = await handled(s, "content", CONTENT, "Info");
    for (let i = 0; i < 3; i++) await new RpcClient(testChannels.get(`unix://${s.socket}`), CONTENT).unary(ctx, "Info", { digest });
    assert.equal(await handled(s, "content", CONTENT, "Info"), before + 3);
    await new RpcClient(testChannels.get(`unix://${s.socket}`), CONTENT).unary(ctx, "Delete", { digest });
  });
});
