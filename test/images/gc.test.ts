/**
 * Garbage collection rules and the collector's pass, against in-memory processes: roots, gc.ref labels,
 * snapshot parents, leases (flat, expired), ingests, containers, a process that is down, the order of
 * snapshot removal, the lease-deletion gate and the re-read of leases before the sweep.
 */
import * as assert from "node:assert/strict";
import { beforeEach, afterEach, describe, it } from "node:test";
import { background, type CallContext } from "#libs/context";
import { errFailedPrecondition, errNotFound, errUnavailable } from "#libs/errdefs";
import { emptyGraph, labelRefs, leaseExpiry, markReachable, snapshotNode, contentNode, type GraphSnapshot } from "#libs/core/gc";
import { Collector } from "#services/images/src/local/gc/collector";
import type { ContainerObject, GCSources, IngestObject } from "#services/images/src/local/gc/sources";
import { openLocalMeta, type LocalMeta } from "./fixtures";
import { dgst, target } from "./suite";

const D = dgst;

describe("gc - labels and reachability", () => {
  it("labelRefs follows containerd's sendLabelRefs", () => {
    const r = labelRefs({
      "containerd.io/gc.ref.content": D("1"),
      "containerd.io/gc.ref.content.m.0": D("2"),
      "containerd.io/gc.ref.content/x": D("3"),
      "containerd.io/gc.ref.contentx": D("4"),
      "containerd.io/gc.ref.snapshot.overlayfs": "top",
      "containerd.io/gc.ref.snapshot.native/other": "n1",
      unrelated: "x",
    });
    assert.deepEqual(r.content.sort(), [D("1"), D("2"), D("3")].sort());
    assert.deepEqual(r.snapshots, [{ snapshotter: "overlayfs", key: "top" }, { snapshotter: "native", key: "n1" }]);
  });

  it("leaseExpiry parses RFC 3339 and flags bad values", () => {
    assert.equal((leaseExpiry({ "containerd.io/gc.expire": "2026-01-02T03:04:05Z" }) as Date).toISOString(), "2026-01-02T03:04:05.000Z");
    assert.equal((leaseExpiry({ "containerd.io/gc.expire": "2026-01-02T03:04:05+01:00" }) as Date).toISOString(), "2026-01-02T02:04:05.000Z");
    assert.equal(leaseExpiry({ "containerd.io/gc.expire": "tomorrow" }), "invalid");
    assert.equal(leaseExpiry({}), undefined);
  });

  it("flat roots mark without following labels, but follow snapshot parents", () => {
    const g = emptyGraph();
    g.content.set(D("1"), { "containerd.io/gc.ref.content.l.0": D("2") });
    g.content.set(D("2"), {});
    g.snapshots.set(snapshotNode("s", "a"), { snapshotter: "s", key: "a", parent: "", labels: {} });
    g.snapshots.set(snapshotNode("s", "b"), { snapshotter: "s", key: "b", parent: "a", labels: { "containerd.io/gc.ref.content": D("2") } });
    g.roots.flatContent.push(D("1"));
    g.roots.flatSnapshots.push({ snapshotter: "s", key: "b" });
    const m = markReachable(g);
    assert.ok(m.has(contentNode(D("1"))));
    assert.ok(!m.has(contentNode(D("2"))));
    assert.ok(m.has(snapshotNode("s", "a")));
    g.roots.content.push(D("1"));
    assert.ok(markReachable(g).has(contentNode(D("2"))), "a full visit after a flat one follows the labels");
  });
});

/** In-memory content, snapshots and containers processes. */
class FakeCluster {
  content = new Map<string, Map<string, Record<string, string>>>();
  ingests = new Map<string, IngestObject[]>();
  snaps = new Map<string, Map<string, GraphSnapshot>>();
  containers = new Map<string, ContainerObject[]>();
  down = new Set<"content" | "snapshots" | "containers">();
  deletes: { ns: string; what: string; pass: number }[] = [];
  /** Stands between the collector and each snapshot removal (to delay or reorder them). */
  removeVia?: (key: string, run: () => Promise<void>) => Promise<void>;
  hooks: { beforeContentList?: () => Promise<void>; onContainers?: (ns: string) => Promise<void>; beforeSnapshotRemove?: () => void } = {};

  private ns(ctx: CallContext): string {
    return ctx.namespace!;
  }
  addContent(ns: string, d: string, labels: Record<string, string> = {}): void {
    if (!this.content.has(ns)) this.content.set(ns, new Map());
    this.content.get(ns)!.set(d, labels);
  }
  addSnap(ns: string, sn: string, key: string, parent = "", labels: Record<string, string> = {}): void {
    if (!this.snaps.has(ns)) this.snaps.set(ns, new Map());
    this.snaps.get(ns)!.set(`${sn}/${key}`, { snapshotter: sn, key, parent, labels });
  }
  hasContent(ns: string, d: string): boolean {
    return !!this.content.get(ns)?.has(d);
  }
  hasSnap(ns: string, sn: string, key: string): boolean {
    return !!this.snaps.get(ns)?.has(`${sn}/${key}`);
  }
  private up(what: "content" | "snapshots" | "containers"): void {
    if (this.down.has(what)) throw errUnavailable(`${what} process: connection refused`);
  }
  sources(): GCSources {
    const removeNow = async (ctx: CallContext, sn: string, key: string, pass: number): Promise<void> => {
      this.up("snapshots");
      const hook = this.hooks.beforeSnapshotRemove;
      this.hooks.beforeSnapshotRemove = undefined;
      hook?.();
      const m = this.snaps.get(this.ns(ctx));
      if (!m?.has(`${sn}/${key}`)) throw errNotFound(`snapshot ${key}`);
      if ([...m.values()].some((s) => s.snapshotter === sn && s.parent === key)) throw errFailedPrecondition(`cannot remove snapshot ${key}: has children`);
      m.delete(`${sn}/${key}`);
      this.deletes.push({ ns: this.ns(ctx), what: `${sn}/${key}`, pass });
    };
    return {
      content: {
        list: async (ctx) => {
          await this.hooks.beforeContentList?.();
          this.up("content");
          return [...(this.content.get(this.ns(ctx)) ?? new Map()).entries()].map(([digest, labels]) => ({ digest, labels }));
        },
        ingests: async (ctx) => (this.up("content"), this.ingests.get(this.ns(ctx)) ?? []),
        delete: async (ctx, d, pass) => {
          this.up("content");
          if (!this.content.get(this.ns(ctx))?.delete(d)) throw errNotFound(`content digest ${d}`);
          this.deletes.push({ ns: this.ns(ctx), what: d, pass });
        },
        abort: async (ctx, ref, pass) => {
          const l = this.ingests.get(this.ns(ctx)) ?? [];
          this.ingests.set(this.ns(ctx), l.filter((i) => i.ref !== ref));
          this.deletes.push({ ns: this.ns(ctx), what: `ingest:${ref}`, pass });
        },
      },
      snapshots: {
        snapshotters: async () => (this.up("snapshots"), ["overlayfs", "native"]),
        list: async (ctx, sn) => (this.up("snapshots"), [...(this.snaps.get(this.ns(ctx))?.values() ?? [])].filter((s) => s.snapshotter === sn)),
        remove: (ctx, sn, key, pass) => (this.removeVia ? this.removeVia(key, () => removeNow(ctx, sn, key, pass)) : removeNow(ctx, sn, key, pass)),
      },
      roots: {
        containers: async (ctx) => {
          await this.hooks.onContainers?.(this.ns(ctx));
          this.up("containers");
          return this.containers.get(this.ns(ctx)) ?? [];
        },
        sandboxes: async () => [],
      },
    };
  }
}

function collectorFor(m: LocalMeta, c: FakeCluster, now?: () => Date, afterLeaseRead?: () => Promise<void>): Collector {
  let leaseReads = 0;
  return new Collector({
    sources: c.sources(),
    gate: m.gate,
    now,
    stores: {
      // the owning processes create the namespaces they write into
      namespaces: () => [...new Set([
        ...[...m.db.getKeys({ start: ["ns"], end: ["ns\0"] })].filter((k) => k.length === 2).map((k) => String(k[1])),
        ...c.content.keys(),
        ...c.snaps.keys(),
      ])],
      images: (ns) => m.images.namespaceImages(ns),
      leases: (ns) => m.leases.namespaceLeases(ns),
      heldBy: async (ctx, id) => {
        const r = await m.leases.heldBy(ctx, id);
        if (leaseReads++ === 0) await afterLeaseRead?.();
        return r;
      },
      removeExpiredLease: (ctx, ns, l) => m.leases.removeExpired(ctx, ns, l),
      retryForgets: (ctx) => m.leases.retryForgets(ctx),
    },
  });
}

const INDEX = "application/vnd.oci.image.index.v1+json";

/** An index -> manifest -> config + 2 layers, unpacked into a 2-snapshot chain, in `ns`. */
function pulledImage(c: FakeCluster, ns: string, tag: string, sn = "overlayfs"): { index: string; blobs: string[]; snaps: string[] } {
  const [index, manifest, config, l0, l1] = [`${tag}1`, `${tag}2`, `${tag}3`, `${tag}4`, `${tag}5`].map((x) => D(x.replace(/[^0-9a-f]/g, "0")));
  c.addContent(ns, index!, { "containerd.io/gc.ref.content.m.0": manifest! });
  c.addContent(ns, manifest!, { "containerd.io/gc.ref.content.config": config!, "containerd.io/gc.ref.content.l.0": l0!, "containerd.io/gc.ref.content.l.1": l1! });
  c.addContent(ns, config!, { [`containerd.io/gc.ref.snapshot.${sn}`]: `${tag}-chain1` });
  c.addContent(ns, l0!, { "containerd.io/uncompressed": D("e") });
  c.addContent(ns, l1!);
  c.addSnap(ns, sn, `${tag}-chain0`);
  c.addSnap(ns, sn, `${tag}-chain1`, `${tag}-chain0`);
  return { index: index!, blobs: [index!, manifest!, config!, l0!, l1!], snaps: [`${tag}-chain0`, `${tag}-chain1`] };
}

describe("gc - the collector across processes", () => {
  let m: LocalMeta;
  let c: FakeCluster;
  const ctx = (ns = "default"): CallContext => background(ns);
  beforeEach(() => {
    m = openLocalMeta();
    c = new FakeCluster();
  });
  afterEach(async () => {
    await m.close();
  });

  it("keeps everything an image reaches and removes the rest, children before parents", async () => {
    const a = pulledImage(c, "default", "a");
    const b = pulledImage(c, "default", "b");
    await m.images.create(ctx(), { name: "a", labels: {}, target: target("0", { digest: a.index, mediaType: INDEX }) });
    c.addContent("default", D("f"));
    c.addSnap("default", "native", "orphan");
    const st = await collectorFor(m, c).collect();
    assert.deepEqual(st.skipped, []);
    for (const d of a.blobs) assert.ok(c.hasContent("default", d), `kept ${d}`);
    for (const s of a.snaps) assert.ok(c.hasSnap("default", "overlayfs", s));
    for (const d of b.blobs) assert.ok(!c.hasContent("default", d), `removed ${d}`);
    for (const s of b.snaps) assert.ok(!c.hasSnap("default", "overlayfs", s));
    assert.ok(!c.hasContent("default", D("f")));
    assert.ok(!c.hasSnap("default", "native", "orphan"));
    assert.deepEqual(st.freed, { content: 6, snapshots: 3, ingests: 0, leases: 0 });
    const order = c.deletes.filter((x) => x.what.startsWith("overlayfs/")).map((x) => x.what);
    assert.ok(order.indexOf("overlayfs/b-chain1") < order.indexOf("overlayfs/b-chain0"), "the child goes first");
    assert.ok(c.deletes.every((x) => x.pass === st.pass), "deletes carry the pass id");
    // nothing left to do
    const st2 = await collectorFor(m, c).collect();
    assert.deepEqual(st2.freed, { content: 0, snapshots: 0, ingests: 0, leases: 0 });
  });

  it("namespaces are collected separately", async () => {
    const a = pulledImage(c, "one", "a");
    pulledImage(c, "two", "a");
    await m.images.create(ctx("one"), { name: "a", labels: {}, target: target("0", { digest: a.index, mediaType: INDEX }) });
    await m.images.create(ctx("two"), { name: "unrelated", labels: {}, target: target("9") });
    await collectorFor(m, c).collect();
    for (const d of a.blobs) assert.ok(c.hasContent("one", d));
    for (const d of a.blobs) assert.ok(!c.hasContent("two", d));
  });

  it("image labels, gc.root labels and containers are roots", async () => {
    const a = pulledImage(c, "default", "a");
    const b = pulledImage(c, "default", "b");
    await m.images.create(ctx(), { name: "labelled", labels: { "containerd.io/gc.ref.content.x": a.index }, target: target("9") });
    c.content.get("default")!.set(b.blobs[4]!, { "containerd.io/gc.root": "2026-01-01T00:00:00Z", "containerd.io/gc.ref.content": b.blobs[3]! });
    c.addSnap("default", "overlayfs", "rooted", "b-chain0", { "containerd.io/gc.root": "x" });
    c.addSnap("default", "native", "ctr-snap", "");
    c.addContent("default", D("c"));
    c.containers.set("default", [{ snapshotter: "native", snapshotKey: "ctr-snap", labels: { "containerd.io/gc.ref.content.spec": D("c") } }]);
    await collectorFor(m, c).collect();
    for (const d of a.blobs) assert.ok(c.hasContent("default", d));
    assert.ok(c.hasContent("default", b.blobs[4]!) && c.hasContent("default", b.blobs[3]!), "gc.root content and what it references");
    assert.ok(!c.hasContent("default", b.blobs[0]!));
    assert.ok(c.hasSnap("default", "overlayfs", "rooted") && c.hasSnap("default", "overlayfs", "b-chain0"), "gc.root snapshot and its parent");
    assert.ok(!c.hasSnap("default", "overlayfs", "b-chain1"));
    assert.ok(c.hasSnap("default", "native", "ctr-snap") && c.hasContent("default", D("c")), "a container's snapshot and label refs");
  });

  it("leases protect what they hold; flat leases do not follow references; expired leases go", async () => {
    const a = pulledImage(c, "default", "a");
    const b = pulledImage(c, "default", "b");
    const x = pulledImage(c, "default", "c");
    await m.leases.create(ctx(), { id: "pull", labels: { "containerd.io/gc.expire": "2999-01-01T00:00:00Z" } });
    await m.content.addResource(ctx(), "pull", { type: "content", id: a.index });
    await m.leases.create(ctx(), { id: "flat", labels: { "containerd.io/gc.flat": "true" } });
    await m.leases.addResource(ctx(), "flat", { type: "content", id: b.index });
    await m.leases.addResource(ctx(), "flat", { type: "snapshots/overlayfs", id: "b-chain1" });
    await m.leases.create(ctx(), { id: "old", labels: { "containerd.io/gc.expire": "2001-01-01T00:00:00Z" } });
    await m.leases.addResource(ctx(), "old", { type: "content", id: x.index });
    const st = await collectorFor(m, c).collect();
    for (const d of a.blobs) assert.ok(c.hasContent("default", d), "a lease keeps the tree it holds");
    assert.ok(c.hasContent("default", b.index) && !c.hasContent("default", b.blobs[1]!), "a flat lease keeps only what it holds");
    assert.ok(c.hasSnap("default", "overlayfs", "b-chain1") && c.hasSnap("default", "overlayfs", "b-chain0"), "flat snapshots keep their parents");
    for (const d of x.blobs) assert.ok(!c.hasContent("default", d), "an expired lease protects nothing");
    assert.equal(st.freed.leases, 1);
    assert.deepEqual((await m.leases.list(ctx())).map((l) => l.id).sort(), ["flat", "pull"]);
    assert.ok(m.content.deletedLeases.includes("old"), "the expired lease's records are forgotten");
  });

  it("ingests: recent or leased ones are kept with the blob they expect; idle unleased ones are aborted", async () => {
    let now = new Date("2030-01-01T00:00:00Z");
    c.addContent("default", D("1"));
    c.addContent("default", D("2"));
    c.ingests.set("default", [
      { ref: "active", expected: D("1"), updatedAt: new Date(now.getTime() - 1000) },
      { ref: "leased-idle", expected: "", updatedAt: new Date(now.getTime() - 48 * 3600e3) },
      { ref: "idle", expected: D("2"), updatedAt: new Date(now.getTime() - 48 * 3600e3) },
    ]);
    await m.leases.create(ctx(), { id: "l" });
    await m.content.addResource(ctx(), "l", { type: "ingests", id: "leased-idle" });
    const st = await collectorFor(m, c, () => now).collect();
    assert.deepEqual(c.ingests.get("default")!.map((i) => i.ref), ["active", "leased-idle"]);
    assert.ok(c.hasContent("default", D("1")), "an ingest in progress keeps the blob it shares");
    assert.ok(!c.hasContent("default", D("2")));
    assert.equal(st.freed.ingests, 1);
    now = new Date(now.getTime() + 1);
  });

  for (const proc of ["content", "snapshots", "containers"] as const) {
    it(`a ${proc} process that is down makes the pass skip the namespace, never guess`, async () => {
      pulledImage(c, "default", "a");
      c.down.add(proc);
      const st = await collectorFor(m, c).collect();
      assert.equal(c.deletes.length, 0);
      assert.ok(st.skipped.length > 0 && st.skipped.some((s) => s.includes("unavailable") || s.includes("connection refused")), st.skipped.join("\n"));
      c.down.delete(proc);
      const st2 = await collectorFor(m, c).collect();
      assert.deepEqual(st2.skipped, []);
      assert.equal(st2.freed.content, 5);
    });
  }

  it("a lease holder that is down makes the pass skip, and expired leases still go", async () => {
    pulledImage(c, "default", "a");
    await m.leases.create(ctx(), { id: "live" });
    m.snapshots.down = true;
    const st = await collectorFor(m, c).collect();
    m.snapshots.down = false;
    assert.equal(c.deletes.length, 0);
    assert.ok(st.skipped.some((s) => s.startsWith("default:")));
  });

  it("only the namespaces asked for are collected", async () => {
    pulledImage(c, "one", "a");
    pulledImage(c, "two", "a");
    await m.leases.create(ctx("one"), {});
    await m.leases.create(ctx("two"), {});
    await collectorFor(m, c).collect(undefined, new Set(["two"]));
    assert.equal(c.content.get("one")!.size, 5);
    assert.equal(c.content.get("two")!.size, 0);
  });

  it("a lease deletion waits while the collector reads objects and leases", async () => {
    const a = pulledImage(c, "default", "a");
    await m.leases.create(ctx(), { id: "pull" });
    await m.content.addResource(ctx(), "pull", { type: "content", id: a.index });
    await m.snapshots.addResource(ctx(), "pull", { type: "snapshots/overlayfs", id: "a-chain1" });
    let release!: () => void;
    const blocked = new Promise<void>((r) => (release = r));
    let listing!: () => void;
    const listed = new Promise<void>((r) => (listing = r));
    c.hooks.beforeContentList = async () => {
      listing();
      await blocked;
    };
    const pass = collectorFor(m, c).collect();
    await listed;
    // The client finishes its pull now: creates the image, then deletes the lease.
    await m.images.create(ctx(), { name: "a", labels: {}, target: target("0", { digest: a.index, mediaType: INDEX }) });
    let deleted = false;
    const del = m.leases.delete(ctx(), "pull").then(() => (deleted = true));
    await new Promise((r) => setTimeout(r, 30));
    assert.equal(deleted, false, "the deletion waits for the collector's reads");
    release();
    await pass;
    await del;
    for (const d of a.blobs) assert.ok(c.hasContent("default", d));
    for (const s of a.snaps) assert.ok(c.hasSnap("default", "overlayfs", s));
  });

  it("an object added to a lease after the leases were read is still kept (re-read before the sweep)", async () => {
    const a = pulledImage(c, "default", "a");
    await m.leases.create(ctx(), { id: "pull2" });
    // Right after the collector read the leases, a pull finds the blobs already there: the content
    // process adds them to the client's lease and the client skips them.
    await collectorFor(m, c, undefined, async () => {
      for (const d of a.blobs) await m.content.addResource(ctx(), "pull2", { type: "content", id: d });
    }).collect();
    for (const d of a.blobs) assert.ok(c.hasContent("default", d));
    for (const s of a.snaps) assert.ok(c.hasSnap("default", "overlayfs", s), "and what they reference");
  });

  it("a snapshot that cannot be removed keeps its parents", async () => {
    pulledImage(c, "default", "a");
    // a child appears after the collector listed the snapshots
    c.hooks.beforeSnapshotRemove = () => c.addSnap("default", "overlayfs", "late-child", "a-chain1");
    const st = await collectorFor(m, c).collect();
    assert.ok(c.hasSnap("default", "overlayfs", "a-chain1") && c.hasSnap("default", "overlayfs", "a-chain0"));
    assert.equal(st.freed.snapshots, 0);
    assert.equal(st.freed.content, 5);
  });

  it("a dead chain is asked for at once, children first; what the owner refuses is asked again while that makes progress", async () => {
    for (let k = 0; k < 4; k++) c.addSnap("default", "overlayfs", `c${k}`, k ? `c${k - 1}` : "");
    // The owner takes a round's calls only once all of them have arrived, and in reverse order: only the
    // deepest child can go per round.
    let queued: { key: string; run: () => void }[] = [];
    const asked: string[] = [];
    c.removeVia = (key, remove) => {
      asked.push(key);
      return new Promise<void>((resolve, reject) => {
        queued.push({ key, run: () => remove().then(resolve, reject) });
        if (queued.length === 1) {
          setImmediate(() => {
            const round = queued.reverse();
            queued = [];
            for (const q of round) q.run();
          });
        }
      });
    };
    const st = await collectorFor(m, c).collect();
    assert.equal(st.freed.snapshots, 4);
    for (let k = 0; k < 4; k++) assert.ok(!c.hasSnap("default", "overlayfs", `c${k}`));
    assert.deepEqual(asked.slice(0, 4), ["c3", "c2", "c1", "c0"], "the first round asks for the whole chain, children first");
    assert.equal(asked.length, 4 + 3 + 2 + 1, "a refused snapshot is asked again in the next round");
  });

  it("a leased child in a dead chain keeps its parents, and the rounds stop", async () => {
    for (let k = 0; k < 3; k++) c.addSnap("default", "overlayfs", `c${k}`, k ? `c${k - 1}` : "");
    let calls = 0;
    c.removeVia = async (key, remove) => {
      calls++;
      if (key === "c2") throw errFailedPrecondition(`snapshot ${key} is leased`);
      return remove();
    };
    const st = await collectorFor(m, c).collect();
    assert.equal(st.freed.snapshots, 0);
    for (let k = 0; k < 3; k++) assert.ok(c.hasSnap("default", "overlayfs", `c${k}`));
    assert.equal(calls, 3, "one round: nothing went, so nothing is asked again");
  });
});


