/** Transfer pull end to end: a real docker-registry, the whole stack, checked with the real ctr. */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { background } from "#libs/context";
import { TransferClient } from "#libs/clients/transfer";
import type { ProgressEvent } from "#libs/core/transfer";
import { chainIds, hostPlatform } from "#libs/oci";
import { startStack, type Stack, testChannels } from "../harness";
import { buildImage, busyboxLayer, dataLayer, pushImage, type BuiltImage } from "./images";
import { startRegistry, type TestRegistry } from "./registry";

const ctxFor = (ns = "default") => background(ns);

async function contentLabels(stack: Stack, digest: string, ns = "default"): Promise<Record<string, string>> {
  const r = await stack.ctr(["content", "ls"], { namespace: ns });
  assert.equal(r.code, 0, r.stderr);
  const line = r.stdout.split("\n").find((l) => l.startsWith(digest));
  assert.ok(line, `content ${digest} listed`);
  const labels: Record<string, string> = {};
  const cols = line!.trim().split(/\s+/);
  const lab = cols[cols.length - 1]!;
  if (lab !== "") for (const kv of lab.split(",")) {
    const i = kv.indexOf("=");
    if (i > 0) labels[kv.slice(0, i)] = kv.slice(i + 1);
  }
  return labels;
}

describe("transfer - pull", () => {
  let stack: Stack;
  let reg: TestRegistry;
  let img: BuiltImage;
  let ref: string;
  let client: TransferClient;

  before(async () => {
    [stack, reg] = await Promise.all([startStack(), startRegistry()]);
    img = buildImage([busyboxLayer(), dataLayer("data", 20, 4096)], { index: true });
    ref = await pushImage(reg.host, "test/busybox", "latest", img);
    client = new TransferClient(testChannels.get(stack.socket));
  });
  after(async () => {
    await stack?.stop();
    await reg?.stop();
  });

  it("pulls, labels and unpacks like ctr", async () => {
    const events: ProgressEvent[] = [];
    const watcher = stack.ctrSpawn(["events"]);
    let seen = "";
    watcher.stdout!.on("data", (b: Buffer) => (seen += b));
    await new Promise((r) => setTimeout(r, 500));
    await client.pull(ctxFor(), ref, { unpacks: [{ platform: hostPlatform(), snapshotter: "overlayfs" }], platforms: [hostPlatform()] }, {}, { progress: (p) => events.push(p) });
    const ls = await stack.ctr(["images", "ls"]);
    assert.equal(ls.code, 0, ls.stderr);
    assert.match(ls.stdout, new RegExp(`${ref.replace(/[.]/g, "\\.")}\\s+application/vnd.oci.image.index.v1\\+json\\s+${img.root.desc.digest}`));
    const check = await stack.ctr(["images", "check"]);
    assert.equal(check.code, 0, check.stderr);
    assert.match(check.stdout, /complete \(\d+\/\d+\)/);
    assert.match(check.stdout, /\btrue\b/, "unpacked");
    // gc.ref labels: index -> every manifest; manifest -> config and layers
    const il = await contentLabels(stack, img.index!.desc.digest);
    assert.equal(il["containerd.io/gc.ref.content.m.0"], img.manifest.desc.digest);
    assert.equal(il["containerd.io/gc.ref.content.m.1"], img.other!.manifest.desc.digest);
    assert.equal(il["containerd.io/distribution.source.127.0.0.1"], "test/busybox");
    const ml = await contentLabels(stack, img.manifest.desc.digest);
    assert.equal(ml["containerd.io/gc.ref.content.config"], img.config.desc.digest);
    assert.equal(ml["containerd.io/gc.ref.content.l.0"], img.layers[0]!.desc.digest);
    assert.equal(ml["containerd.io/gc.ref.content.l.1"], img.layers[1]!.desc.digest);
    const chain = chainIds(img.layers.map((l) => l.diffId));
    const cl = await contentLabels(stack, img.config.desc.digest);
    assert.equal(cl["containerd.io/gc.ref.snapshot.overlayfs"], chain[1]);
    for (const l of img.layers) {
      const ll = await contentLabels(stack, l.desc.digest);
      assert.equal(ll["containerd.io/uncompressed"], l.diffId);
      assert.equal(ll["containerd.io/distribution.source.127.0.0.1"], "test/busybox");
    }
    // the other platform's manifest was not fetched
    const all = await stack.ctr(["content", "ls", "-q"]);
    assert.ok(!all.stdout.includes(img.other!.manifest.desc.digest));
    const snaps = await stack.ctr(["snapshots", "ls"]);
    for (const c of chain) assert.ok(snaps.stdout.includes(c), `snapshot ${c}`);
    // no leftover extract snapshots or leases
    assert.ok(!snaps.stdout.includes("extract-"), snaps.stdout);
    const leases = await stack.ctr(["leases", "ls", "-q"]);
    assert.equal(leases.stdout.trim(), "");
    // events as the work happened
    await new Promise((r) => setTimeout(r, 500));
    watcher.kill("SIGKILL");
    assert.match(seen, /\/images\/create/, seen);
    assert.match(seen, /\/snapshot\/commit/, seen);
    // progress
    const evs = events.map((e) => e.event);
    assert.ok(evs.includes(`Resolving from OCIRegistry(${ref})`));
    assert.ok(evs.includes("waiting") && evs.includes("complete") && evs.includes("extracted"), evs.join(","));
    assert.equal(evs[evs.length - 1], `Completed pull from OCIRegistry(${ref})`);
  });

  it("blobs already present: another repository's pull merges the source label, another namespace gets its own labels", async () => {
    const copy = await pushImage(reg.host, "test/copy", "latest", img);
    await client.pull(ctxFor(), copy, { unpacks: [{ platform: hostPlatform(), snapshotter: "overlayfs" }], platforms: [hostPlatform()] });
    const listed = (await stack.ctr(["content", "ls"])).stdout.split("\n");
    for (const d of [img.index!.desc.digest, img.manifest.desc.digest, img.config.desc.digest, ...img.layers.map((l) => l.desc.digest)]) {
      const line = listed.find((l) => l.startsWith(d));
      assert.match(line ?? "", /containerd\.io\/distribution\.source\.127\.0\.0\.1=test\/busybox,test\/copy(,|\s|$)/, `${d}: ${line}`);
    }
    // In a namespace of its own the blobs are committed without data (shared), labelled as in the first.
    await client.pull(ctxFor("other"), ref, { unpacks: [{ platform: hostPlatform(), snapshotter: "overlayfs" }], platforms: [hostPlatform()] });
    const ml = await contentLabels(stack, img.manifest.desc.digest, "other");
    assert.equal(ml["containerd.io/gc.ref.content.config"], img.config.desc.digest);
    assert.equal(ml["containerd.io/gc.ref.content.l.1"], img.layers[1]!.desc.digest);
    assert.equal(ml["containerd.io/distribution.source.127.0.0.1"], "test/busybox");
    const il = await contentLabels(stack, img.index!.desc.digest, "other");
    assert.equal(il["containerd.io/gc.ref.content.m.0"], img.manifest.desc.digest);
    const cl = await contentLabels(stack, img.config.desc.digest, "other");
    assert.equal(cl["containerd.io/gc.ref.snapshot.overlayfs"], chainIds(img.layers.map((l) => l.diffId))[1]);
    const check = await stack.ctr(["images", "check"], { namespace: "other" });
    assert.match(check.stdout, /complete \(\d+\/\d+\)/);
  });

  it("all_metadata keeps other platforms' manifests and configs, not their layers; no unpack when none asked", async () => {
    await client.pull(ctxFor("meta"), ref, { platforms: [hostPlatform()], allMetadata: true });
    const all = (await stack.ctr(["content", "ls", "-q"], { namespace: "meta" })).stdout;
    assert.ok(all.includes(img.other!.manifest.desc.digest));
    assert.ok(all.includes(img.other!.config.desc.digest));
    assert.equal((await stack.ctr(["snapshots", "ls"], { namespace: "meta" })).stdout.trim().split("\n").length, 1);
    const check = await stack.ctr(["images", "check"], { namespace: "meta" });
    assert.match(check.stdout, /complete/);
  });
});
