/**
 * Over-long names through the gateway, to every method that takes one (issue 20): a 70,000-character
 * string never reaches an LMDB key as is. Where containerd takes a name of any length (an ingest ref,
 * an image name) it is taken and works end to end; where containerd validates (namespaces, container,
 * sandbox and lease ids, snapshot keys) the answer is InvalidArgument in containerd's words; a lookup
 * by such a name is NotFound. Never Unknown or Internal, no owner logs a RangeError, and nothing is
 * left half written. The real `ctr` is used wherever it can express the call.
 */
import * as assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { background, withLease } from "#libs/context";
import { ErrorCodes, type ErrorCode } from "#libs/errdefs";
import { RpcClient } from "#libs/grpc/client";
import type { Msg } from "#libs/grpc/server";
import { ContentStoreProxy } from "#libs/clients/content";
import { startStack, type Stack, testChannels } from "../harness";
import { handled, startupCollected } from "./helpers";
import { rejectsWith, sha } from "../content/suite";

const CONTENT = "containerd.services.content.v1.Content";
const IMAGES = "containerd.services.images.v1.Images";
const NAMESPACES = "containerd.services.namespaces.v1.Namespaces";
const LEASES = "containerd.services.leases.v1.Leases";
const CONTAINERS = "containerd.services.containers.v1.Containers";
const SNAPSHOTS = "containerd.services.snapshots.v1.Snapshots";
const TASKS = "containerd.services.tasks.v1.Tasks";
const SANDBOXES = "containerd.services.sandbox.v1.Store";

const LONG = "x".repeat(70_000);
/** What any trace of a long name in a listing contains. */
const TRACE = "x".repeat(100);

describe("gateway - over-long names to every method that takes one", () => {
  let s: Stack;
  const ctx = background("default");
  let gw: (service: string) => RpcClient<string>;
  /** `ctr args` must fail with containerd's `<message>: <code>` on its last line. */
  const ctrFails = async (args: string[], code: string, message?: RegExp): Promise<void> => {
    const r = await s.ctr(args);
    const shown = `ctr ${args.map((a) => (a.length > 40 ? `${a.slice(0, 20)}...(${a.length})` : a)).join(" ")}`;
    assert.notEqual(r.code, 0, `${shown} succeeded`);
    assert.ok(r.stderr.trimEnd().endsWith(`: ${code}`), `${shown}: ${r.stderr.slice(-300)}`);
    if (message) assert.match(r.stderr, message, shown);
  };
  const rpcFails = (service: string, method: string, req: Msg, code: ErrorCode, message?: RegExp): Promise<void> => rejectsWith(gw(service).unary(ctx, method, req), code, message);

  before(async () => {
    s = await startStack({ logLevel: "warn", metrics: true });
    gw = (service) => new RpcClient(testChannels.get(`unix://${s.socket}`), service);
    await startupCollected(s);
  });
  after(async () => {
    await s?.stop();
  });

  it("content: an ingest ref of any length is taken (ctr content ingest), its status and abort work; a digest that long is InvalidArgument", async () => {
    const data = Buffer.from("hi\n");
    const r = await s.ctr(["content", "ingest", LONG], { input: data });
    assert.equal(r.code, 0, r.stderr.slice(-500));
    assert.match((await s.ctr(["content", "ls", "-q"])).stdout, new RegExp(sha(data)));
    assert.equal((await s.ctr(["content", "label", sha(data), "containerd.io/gc.root=long-names"])).code, 0, "kept from the collector");
    assert.doesNotMatch((await s.ctr(["content", "active"])).stdout, new RegExp(TRACE), "the committed ingest is gone");
    await rpcFails(CONTENT, "Status", { ref: LONG }, ErrorCodes.NotFound);
    await rpcFails(CONTENT, "Abort", { ref: LONG }, ErrorCodes.NotFound);

    // An unfinished write under that ref, held by a lease: listed with its whole ref (as the lease's
    // resource too), its status read, then aborted.
    const lease = String(((await gw(LEASES).unary(ctx, "Create", { id: "long-names-lease" })).lease as Msg).id);
    const w = await new ContentStoreProxy(testChannels.get(s.socket)).writer(withLease(ctx, lease), { ref: LONG, total: 10 });
    await w.write(Buffer.from("12345"));
    const held = ((await gw(LEASES).unary(ctx, "ListResources", { id: lease })).resources as Msg[]).map((x) => `${x.type}/${x.id}`);
    assert.deepEqual(held, [`ingests/${LONG}`]);
    const st = (await gw(CONTENT).unary(ctx, "Status", { ref: LONG })).status as Msg;
    assert.equal(st.ref, LONG);
    assert.equal(Number(st.offset), 5);
    const active = ((await gw(CONTENT).unary(ctx, "ListStatuses", { filters: [] })).statuses as Msg[]).map((x) => x.ref);
    assert.ok(active.includes(LONG), "ListStatuses gives the whole ref");
    await w.close?.();
    await gw(CONTENT).unary(ctx, "Abort", { ref: LONG });
    await rpcFails(CONTENT, "Status", { ref: LONG }, ErrorCodes.NotFound);
    assert.deepEqual((await gw(LEASES).unary(ctx, "ListResources", { id: lease })).resources, []);
    await gw(LEASES).unary(ctx, "Delete", { id: lease });

    for (const method of ["Info", "Delete"]) await rpcFails(CONTENT, method, { digest: LONG }, ErrorCodes.InvalidArgument);
    await rpcFails(CONTENT, "Update", { info: { digest: LONG, labels: { a: "b" } }, update_mask: { paths: ["labels.a"] } }, ErrorCodes.InvalidArgument);
    await ctrFails(["content", "label", sha(data), `k=${"v".repeat(5000)}`], ErrorCodes.InvalidArgument, /label key and value greater than maximum size \(4096 bytes\), key: k/);
    await ctrFails(["content", "label", sha(data), `${LONG}=v`], ErrorCodes.InvalidArgument, /label key and value greater than maximum size \(4096 bytes\), key: xxxxxxxxxx/);
  });

  it("images: a name of any length is created, read, updated, listed and deleted; an over-long label is InvalidArgument", async () => {
    const blob = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json", manifests: [] }));
    const ingest = await s.ctr(["content", "ingest", "--expected-digest", sha(blob), "long-names-index"], { input: blob.toString() });
    assert.equal(ingest.code, 0, ingest.stderr);
    const target = { media_type: "application/vnd.oci.image.index.v1+json", digest: sha(blob), size: blob.length };
    const images = gw(IMAGES);
    const created = (await images.unary(ctx, "Create", { image: { name: LONG, target, labels: { "containerd.io/gc.root": "t" } } })).image as Msg;
    assert.equal(created.name, LONG);
    assert.equal(((await images.unary(ctx, "Get", { name: LONG })).image as Msg).name, LONG);
    // The gateway's view of the images database reads a digested name's key as the owner does (a
    // request as big as LONG's is past what the gateway buffers for a view: the owner answers that).
    const mid = "m".repeat(5000);
    await images.unary(ctx, "Create", { image: { name: mid, target, labels: { "containerd.io/gc.root": "t" } } });
    const owned = await handled(s, "images", IMAGES, "Get");
    assert.equal(((await images.unary(ctx, "Get", { name: mid })).image as Msg).name, mid);
    assert.equal(await handled(s, "images", IMAGES, "Get"), owned, "answered by the gateway's read view");
    await images.unary(ctx, "Delete", { name: mid });
    await rpcFails(IMAGES, "Create", { image: { name: LONG, target } }, ErrorCodes.AlreadyExists);
    const updated = (await images.unary(ctx, "Update", { image: { name: LONG, target, labels: { step: "2" } }, update_mask: { paths: ["labels.step"] } })).image as Msg;
    assert.equal((updated.labels as Record<string, string>).step, "2");
    const ls = await s.ctr(["images", "ls", "-q"]);
    assert.ok(ls.stdout.split("\n").includes(LONG), "ctr images ls lists the whole name");
    const rm = await s.ctr(["images", "rm", LONG]);
    assert.equal(rm.code, 0, rm.stderr.slice(-300));
    await rpcFails(IMAGES, "Get", { name: LONG }, ErrorCodes.NotFound);
    await rpcFails(IMAGES, "Delete", { name: LONG }, ErrorCodes.NotFound);
    await rpcFails(IMAGES, "Update", { image: { name: LONG, target } }, ErrorCodes.NotFound);
    await rpcFails(IMAGES, "Create", { image: { name: `${LONG}-labelled`, target, labels: { big: "v".repeat(5000) } } }, ErrorCodes.InvalidArgument, /label key and value greater than maximum size \(4096 bytes\), key: big/);
    await rpcFails(IMAGES, "Get", { name: `${LONG}-labelled` }, ErrorCodes.NotFound);
    await s.ctr(["content", "rm", sha(blob)]);
  });

  it("namespaces, leases, containers, sandboxes: InvalidArgument for ids past containerd's identifier rules, NotFound for lookups", async () => {
    // containerd quotes the whole identifier; a status message keeps a long one's head and tail.
    const tooLong = /identifier "x+\.\.\.\(\d+ characters left out\)\.\.\.x+" greater than maximum length \(76 characters\)/;
    await ctrFails(["namespaces", "create", LONG], ErrorCodes.InvalidArgument, tooLong);
    // Labelling creates a namespace that does not exist yet (containerd's SetLabel): not one of that name.
    await ctrFails(["namespaces", "label", LONG, "a=b"], ErrorCodes.InvalidArgument, tooLong);
    await rpcFails(NAMESPACES, "Delete", { name: LONG }, ErrorCodes.NotFound);
    // Get answers any name that holds nothing with no labels, as containerd does, and creates nothing.
    assert.deepEqual((await gw(NAMESPACES).unary(ctx, "Get", { name: LONG })).namespace, { name: LONG, labels: {} });
    assert.doesNotMatch((await s.ctr(["namespaces", "ls", "-q"])).stdout, /xxxx/);
    // As the namespace of a call (the containerd-namespace header).
    await ctrFails(["-n", "y".repeat(77), "containers", "ls"], ErrorCodes.InvalidArgument, /namespace validation: identifier "y+" greater than maximum length \(76 characters\)/);

    await ctrFails(["leases", "create", "--id", LONG], ErrorCodes.InvalidArgument);
    await ctrFails(["leases", "rm", LONG], ErrorCodes.NotFound);
    await rpcFails(LEASES, "AddResource", { id: LONG, resource: { id: "sha256:" + "0".repeat(64), type: "content" } }, ErrorCodes.NotFound);
    await rpcFails(LEASES, "ListResources", { id: LONG }, ErrorCodes.NotFound);

    const spec = { type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec", value: Buffer.from("{}") };
    await rpcFails(CONTAINERS, "Create", { container: { id: LONG, runtime: { name: "io.containerd.runc.v2" }, spec } }, ErrorCodes.InvalidArgument, tooLong);
    await rpcFails(CONTAINERS, "Get", { id: LONG }, ErrorCodes.NotFound);
    await rpcFails(CONTAINERS, "Update", { container: { id: LONG, runtime: { name: "io.containerd.runc.v2" }, spec } }, ErrorCodes.NotFound);
    await ctrFails(["containers", "info", LONG], ErrorCodes.NotFound);
    await ctrFails(["containers", "rm", LONG], ErrorCodes.NotFound);
    await ctrFails(["containers", "label", LONG, "a=b"], ErrorCodes.NotFound);

    await rpcFails(TASKS, "Create", { container_id: LONG }, ErrorCodes.NotFound);
    for (const method of ["Get", "Delete", "Start", "Pause", "Resume", "Kill"]) await rpcFails(TASKS, method, { container_id: LONG, signal: 9 }, ErrorCodes.NotFound);
    await ctrFails(["tasks", "kill", LONG], ErrorCodes.NotFound);
    await ctrFails(["tasks", "rm", LONG], ErrorCodes.NotFound);

    await rpcFails(SANDBOXES, "Create", { sandbox: { sandbox_id: LONG, runtime: { name: "io.containerd.runc.v2" } } }, ErrorCodes.InvalidArgument, /x+" greater than maximum length \(76 characters\)/);
    await rpcFails(SANDBOXES, "Get", { sandbox_id: LONG }, ErrorCodes.NotFound);
    await rpcFails(SANDBOXES, "Delete", { sandbox_id: LONG }, ErrorCodes.NotFound);
  });

  it("snapshots: keys past the limit are InvalidArgument for Prepare, View and Commit; NotFound for Stat, Mounts, Remove", async () => {
    for (const sn of ["overlayfs", "native"]) {
      const snap = (args: string[]): string[] => ["snapshots", "--snapshotter", sn, ...args];
      await ctrFails(snap(["prepare", LONG]), ErrorCodes.InvalidArgument, /snapshot key "x+\.\.\." is too long/);
      await ctrFails(snap(["view", LONG]), ErrorCodes.InvalidArgument, /snapshot key "x+\.\.\." is too long/);
      await ctrFails(snap(["prepare", "long-names-child", LONG]), ErrorCodes.NotFound);
      for (const args of [["info", LONG], ["mounts", "/tmp", LONG], ["rm", LONG]]) await ctrFails(snap(args), ErrorCodes.NotFound);
      const ok = await s.ctr(snap(["prepare", "long-names-active"]));
      assert.equal(ok.code, 0, ok.stderr);
      await ctrFails(snap(["commit", LONG, "long-names-active"]), ErrorCodes.InvalidArgument, /snapshot key "x+\.\.\." is too long/);
      await rpcFails(SNAPSHOTS, "Update", { snapshotter: sn, info: { name: LONG, labels: { a: "b" } }, update_mask: { paths: ["labels.a"] } }, ErrorCodes.NotFound);
      // A key that fits, under a lease id that makes the lease record's key too long: refused whole
      // (no record, no directory left behind), and the next prepare of that key works.
      const key = "k".repeat(600);
      await rejectsWith(gw(SNAPSHOTS).unary(withLease(ctx, "l".repeat(1500)), "Prepare", { snapshotter: sn, key, parent: "" }), ErrorCodes.InvalidArgument);
      await rpcFails(SNAPSHOTS, "Stat", { snapshotter: sn, key }, ErrorCodes.NotFound);
      await gw(SNAPSHOTS).unary(ctx, "Prepare", { snapshotter: sn, key, parent: "" });
      await gw(SNAPSHOTS).unary(ctx, "Remove", { snapshotter: sn, key });
      assert.equal((await s.ctr(snap(["rm", "long-names-active"]))).code, 0);
    }
  });

  it("nothing was written under a long name, and no owner logged a RangeError", async () => {
    const listings = [
      ["namespaces", "ls", "-q"],
      ["containers", "ls", "-q"],
      ["leases", "ls", "-q"],
      ["snapshots", "ls"],
      ["snapshots", "--snapshotter", "native", "ls"],
      ["images", "ls", "-q"],
      ["content", "active"],
    ];
    for (const args of listings) {
      const r = await s.ctr(args);
      assert.equal(r.code, 0, `${args.join(" ")}: ${r.stderr}`);
      assert.ok(!r.stdout.includes(TRACE), `ctr ${args.join(" ")} lists a long name`);
    }
    const sandboxes = ((await gw(SANDBOXES).unary(ctx, "List", { filters: [] })).list as Msg[] | undefined) ?? [];
    assert.ok(!sandboxes.some((x) => String(x.sandbox_id).includes(TRACE)));
    assert.doesNotMatch(s.logs(), /does not fit in target buffer|RangeError/);
  });
});
