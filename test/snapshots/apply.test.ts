/**
 * The walking differ on real snapshots: layers built here (tar, gzip, zstd; OCI and Docker media
 * types) applied to overlayfs and native snapshots, the resulting trees checked through real mounts;
 * hostile layers refused with InvalidArgument and leaving the snapshot untouched; Diff producing a
 * layer that re-applies to the same tree.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { ErrorCodes } from "#libs/errdefs";
import { LABEL_UNCOMPRESSED, LayerMediaTypes, type Descriptor } from "#libs/core/diff";
import type { Mount } from "#libs/core/snapshots";
import { differConfig, LocalDiffer } from "#services/snapshots/src/local/diff/differ";
import { TarTypes } from "#services/snapshots/src/local/diff/tar";
import { localFixture, type BackendName, type LocalFixture } from "./fixtures";
import { blobFile } from "#services/snapshots/src/local/diff/content";
import { describeTree, dir, file, gzip, hardlink, MemContent, opaque, sha256, symlink, tarOf, whiteout, zstd, type E } from "./layers";
import { nsCtx, rejectsWith, withMounted } from "./suite";

const ctx = nsCtx("apply");

const LAYER1: E[] = [
  dir("etc"),
  file("etc/passwd", "root:x:0:0\n", { xattrs: { "user.origin": "layer1" } }),
  dir("bin"),
  file("bin/sh", "#!shell", { mode: 0o755, mtime: 1600000000 }),
  { ...hardlink("bin/sh2", "bin/sh"), mode: 0o755, mtime: 1600000000 }, // a link header carries the inode's metadata
  file("bin/su", "su", { mode: 0o4755 }),
  dir("usr"),
  dir("usr/lib"),
  file("usr/lib/libx.so", "x".repeat(10000), { uid: 1000, gid: 1001 }),
  dir("a", 0o750, { uid: 7, gid: 8 }),
  file("a/keep", "keep"),
  file("a/gone", "gone"),
  dir("opq"),
  file("opq/old1", "1"),
  dir("opq/sub"),
  file("opq/sub/old2", "2"),
  symlink("link", "etc/passwd"),
  symlink("abs-link", "/etc/passwd"),
  { name: "dev-null", type: TarTypes.Char, devmajor: 1, devminor: 3, mode: 0o666 },
  { name: "pipe", type: TarTypes.Fifo, mode: 0o600 },
];

const LAYER2: E[] = [
  whiteout("a/gone"),
  opaque("opq"),
  file("opq/new", "new"),
  file("etc/passwd", "root:x:0:0\nuser:x:1000:1000\n", { xattrs: { "user.origin": "layer2" } }),
  whiteout("usr"),
  file("newdir/deep/file", "implicit parents"),
  file("a/added", "added", { uid: 42 }),
];

/** What a view of layer1+layer2 must show. */
const EXPECTED = [
  "a dir mode=750 uid=7 gid=8",
  "a/added file:FILE mode=644 uid=42 gid=0",
  "a/keep file:FILE mode=644 uid=0 gid=0",
  "abs-link symlink->/etc/passwd uid=0 gid=0",
  "bin dir mode=755 uid=0 gid=0",
  "bin/sh file:FILE mode=755 uid=0 gid=0 mtime=1600000000 hardlink-group=bin/sh",
  "bin/sh2 file:FILE mode=755 uid=0 gid=0 mtime=1600000000 hardlink-group=bin/sh",
  "bin/su file:FILE mode=4755 uid=0 gid=0",
  "dev-null char:1,3 mode=666 uid=0 gid=0",
  "etc dir mode=755 uid=0 gid=0",
  "etc/passwd file:FILE mode=644 uid=0 gid=0 xattrs=user.origin=layer2",
  "link symlink->etc/passwd uid=0 gid=0",
  "newdir dir mode=755 uid=0 gid=0",
  "newdir/deep dir mode=755 uid=0 gid=0",
  "newdir/deep/file file:FILE mode=644 uid=0 gid=0",
  "opq dir mode=755 uid=0 gid=0",
  "opq/new file:FILE mode=644 uid=0 gid=0",
  "pipe fifo mode=600 uid=0 gid=0",
];

/** Tree lines without content hashes, plus the mtime only for bin/sh*. */
function normalize(lines: string[]): string[] {
  return lines
    .map((l) => l.replace(/file:[0-9a-f]+/, "file:FILE").replace(/ xattrs=trusted\.overlay\.opaque=y/, ""))
    .map((l) => (l.startsWith("bin/sh") ? l : l.replace(/ mtime=\d+/, "")));
}

function desc(content: MemContent, blob: Buffer, mediaType: string): Descriptor {
  return { mediaType, digest: content.add(blob), size: blob.length };
}

async function applyChain(fx: LocalFixture, differ: LocalDiffer, content: MemContent, layers: Buffer[][], prefix: string, mediaType: string = LayerMediaTypes.OciTarGzip): Promise<string> {
  let parent = "";
  for (let i = 0; i < layers.length; i++) {
    const key = `${prefix}-extract-${i}`;
    const m = await fx.sn.prepare(ctx, key, parent);
    const blob = layers[i]![0]!;
    const applied = await differ.apply(ctx, desc(content, blob, mediaType), m);
    assert.equal(applied.digest, sha256(layers[i]![1]!), "applied digest is the uncompressed diff ID");
    assert.equal(applied.size, layers[i]![1]!.length);
    assert.equal(applied.mediaType, LayerMediaTypes.OciTar);
    await fx.sn.commit(ctx, `${prefix}-${i}`, key);
    parent = `${prefix}-${i}`;
  }
  return parent;
}

async function viewTree(fx: LocalFixture, parent: string, key: string, mtime = true): Promise<string[]> {
  const m = await fx.sn.view(ctx, key, parent);
  try {
    return await withMounted(m, (d) => describeTree(d, { mtime }));
  } finally {
    await fx.sn.remove(ctx, key);
  }
}

// Layers reach the differ as local blob files (the co-located fast path; gzip layers are then inflated
// whole and applied from memory) and as gRPC-like streams: overlayfs with files, native both ways.
for (const [backend, localFiles] of [["overlayfs", true], ["native", false], ["native", true]] as [BackendName, boolean][]) {
  describe(`apply - ${backend}${backend === "native" ? (localFiles ? " (local blob files)" : " (streams)") : ""}`, () => {
    let fx: LocalFixture;
    const blobRoot = localFiles ? fs.mkdtempSync(path.join(os.tmpdir(), "flt-blobs-")) : undefined;
    const content = new MemContent(blobRoot);
    let differ: LocalDiffer;
    let strict: LocalDiffer;
    const t1 = tarOf(LAYER1);
    const t2 = tarOf(LAYER2);

    before(async () => {
      fx = await localFixture(backend);
      differ = new LocalDiffer(content, differConfig({}, path.join(fx.root, "tmp")));
      strict = new LocalDiffer(content, differConfig({ allow_devices: false, max_uncompressed_bytes: 8 * 1024 * 1024, workers: 1 }, path.join(fx.root, "tmp")));
    });
    after(async () => {
      await differ?.close();
      await strict?.close();
      await fx?.close();
      if (blobRoot) fs.rmSync(blobRoot, { recursive: true, force: true });
    });

    if (blobRoot) {
      test("a layer is read from its local blob file when there is one", async () => {
        const t = tarOf([file("from-file", "local bytes")]);
        const blob = gzip(t);
        const d = content.add(blob);
        content.blobs.set(d, { data: Buffer.alloc(0), labels: {} }); // a stream would fail the size check
        const m = await fx.sn.prepare(ctx, "local-file", "");
        assert.equal((await differ.apply(ctx, { mediaType: LayerMediaTypes.OciTarGzip, digest: d, size: blob.length }, m)).digest, sha256(t));
        await fx.sn.remove(ctx, "local-file");
      });

      test("a local blob file with other bytes of the same size is streamed instead", async () => {
        const t = tarOf([file("f", "good bytes")]);
        const d = content.add(t);
        fs.writeFileSync(blobFile(blobRoot, d)!, tarOf([file("f", "evil bytes")])); // same size, other digest
        const m = await fx.sn.prepare(ctx, "same-size", "");
        assert.equal((await differ.apply(ctx, { mediaType: LayerMediaTypes.OciTar, digest: d, size: t.length }, m)).digest, sha256(t));
        await fx.sn.commit(ctx, "same-size-c", "same-size");
        const tree = await viewTree(fx, "same-size-c", "same-size-view", false);
        assert.ok(tree[0]!.startsWith(`f file:${sha256(Buffer.from("good bytes")).slice(7, 19)} `), tree.join("\n"));
      });

      test("a corrupt local blob file is streamed instead", async () => {
        const t = tarOf([file("g", "fine")]);
        const good = gzip(t);
        const d = content.add(good);
        fs.writeFileSync(blobFile(blobRoot, d)!, Buffer.alloc(good.length, 0x41)); // not even gzip
        const m = await fx.sn.prepare(ctx, "corrupt-file", "");
        assert.equal((await differ.apply(ctx, { mediaType: LayerMediaTypes.OciTarGzip, digest: d, size: good.length }, m)).digest, sha256(t));
        await fx.sn.remove(ctx, "corrupt-file");
      });

      test("a local blob file that does not match its descriptor is streamed instead", async () => {
        const t = tarOf([file("from-stream", "the store's bytes")]);
        const good = gzip(t);
        const d = content.add(good);
        fs.writeFileSync(blobFile(blobRoot, d)!, gzip(tarOf([file("stale", "other bytes")]))); // a stale or foreign file
        const m = await fx.sn.prepare(ctx, "stale-file", "");
        const applied = await differ.apply(ctx, { mediaType: LayerMediaTypes.OciTarGzip, digest: d, size: good.length }, m);
        assert.equal(applied.digest, sha256(t));
        await fx.sn.commit(ctx, "stale-file-c", "stale-file");
        const tree = await viewTree(fx, "stale-file-c", "stale-file-view", false);
        assert.deepEqual(tree.map((l) => l.split(" ")[0]), ["from-stream"]);
      });
    }

    test("a gzip layer inflating to many pieces (big random files and small ones) arrives whole and in order", async () => {
      // Several megabytes of incompressible data: zlib hands them over in many pieces, hashed and
      // written while the next ones inflate; small files in between keep headers and data interleaved.
      const entries: E[] = [];
      for (let i = 0; i < 3; i++) {
        entries.push(file(`big/blob${i}`, crypto.randomBytes(3 * 1024 * 1024 + 1000 * i)));
        for (let j = 0; j < 50; j++) entries.push(file(`small/${i}/f${j}`, `file ${i}/${j} `.repeat(j)));
      }
      const t = tarOf(entries);
      const top = await applyChain(fx, differ, content, [[gzip(t), t]], "many-pieces");
      const tree = await viewTree(fx, top, "many-pieces-view", false);
      for (const e of entries) {
        const data = e.data as Buffer | string;
        const line = tree.find((l) => l.startsWith(`${e.name} file:`));
        assert.ok(line, `${e.name} is there`);
        assert.ok(line.startsWith(`${e.name} file:${sha256(Buffer.from(data)).slice(7, 19)} `), line);
      }
      await fx.sn.remove(ctx, top);
    });

    test("deletions and an opaque directory in an upper layer give exactly the expected tree", async () => {
      const top = await applyChain(fx, differ, content, [[gzip(t1), t1], [gzip(t2), t2]], "img");
      assert.deepEqual(normalize(await viewTree(fx, top, "img-view")), EXPECTED);
      if (backend === "overlayfs") {
        // The upper layer itself holds overlay whiteouts and the opaque marker, not deletions.
        const m = await fx.sn.prepare(ctx, "peek", top);
        const upperOf2 = (await fx.sn.mounts(ctx, "peek"))[0]!.options.find((o) => o.startsWith("lowerdir="))!.slice(9).split(":")[0]!;
        const d = describeTree(upperOf2);
        assert.ok(d.some((l) => l.startsWith("a/gone char:0,0")), "whiteout device for a/gone");
        assert.ok(d.some((l) => l.startsWith("usr char:0,0")), "whiteout device for usr");
        assert.ok(d.some((l) => l.startsWith("opq dir") && l.includes("trusted.overlay.opaque=y")), "opaque xattr on opq");
        assert.ok(m.length === 1);
        await fx.sn.remove(ctx, "peek");
      }
    });

    test("tar, gzip and zstd with OCI and Docker media types give the same diff ID and tree", async () => {
      const variants: [string, Buffer][] = [
        [LayerMediaTypes.OciTar, t1],
        [LayerMediaTypes.DockerTar, t1],
        [LayerMediaTypes.OciTarGzip, gzip(t1)],
        [LayerMediaTypes.DockerTarGzip, gzip(t1)],
      ];
      variants.push([LayerMediaTypes.OciTarZstd, zstd(t1)], [LayerMediaTypes.DockerTarZstd, zstd(t1)]);
      let first: string[] | undefined;
      for (const [i, [mt, blob]] of variants.entries()) {
        const top = await applyChain(fx, differ, content, [[blob, t1]], `mt${i}`, mt);
        const tree = await viewTree(fx, top, `mt${i}-view`);
        first ??= tree;
        assert.deepEqual(tree, first, mt);
      }
    });

    test("unknown media type is NotImplemented; missing blob is NotFound", async () => {
      const m = await fx.sn.prepare(ctx, "mt-unknown", "");
      await rejectsWith(differ.apply(ctx, { mediaType: "application/x-nope", digest: sha256(t1), size: 1 }, m), ErrorCodes.NotImplemented);
      await rejectsWith(differ.apply(ctx, { mediaType: LayerMediaTypes.OciTar, digest: sha256(Buffer.from("absent")), size: 6 }, m), ErrorCodes.NotFound);
      await fx.sn.remove(ctx, "mt-unknown");
    });

    test("a gzip layer of two members applies (the whole-buffer inflater leaves it to zlib)", async () => {
      const a = tarOf([file("m/one", "first member")]);
      const b = tarOf([file("m/two", "second member")]);
      // Two gzip members: a tar split across them (the first without its end blocks).
      const t = Buffer.concat([a.subarray(0, a.length - 1024), b]);
      const twoMembers = Buffer.concat([gzip(a.subarray(0, a.length - 1024)), gzip(b)]);
      const top = await applyChain(fx, differ, content, [[twoMembers, t]], "two-members");
      assert.deepEqual((await viewTree(fx, top, "two-members-view", false)).map((l) => l.split(" ")[0]), ["m", "m/one", "m/two"]);
      await fx.sn.remove(ctx, top);
    });

    describe("hostile layers are refused with InvalidArgument and leave the snapshot untouched", () => {
      const canary = fs.mkdtempSync(path.join(os.tmpdir(), "flt-canary-"));
      let base = "";
      before(async () => {
        base = await applyChain(fx, differ, content, [[gzip(t1), t1]], "hbase");
      });
      after(() => fs.rmSync(canary, { recursive: true, force: true }));

      const cases: [string, () => Buffer, ("strict" | "normal")?][] = [
        ["a .. path", () => tarOf([file("ok", "fine"), file("../escape", "x")])],
        ["a .. path in the middle", () => tarOf([file("a/../../escape", "x")])],
        ["an absolute path", () => tarOf([file("ok", "fine"), file(`${canary}/abs`, "x")])],
        ["a write through a symlink to an absolute path", () => tarOf([symlink("evil", canary), file("evil/pwned", "x")])],
        ["a write through a symlink climbing out of the root", () => tarOf([symlink("evil", "../../../../../../../../.." + canary), file("evil/pwned", "x")])],
        ["a write through an existing absolute symlink from a lower layer", () => tarOf([file("abs-link/x", "x")])],
        ["a hard link out of the root", () => tarOf([hardlink("h", "../../../../../../../../../etc/passwd")])],
        ["a hard link with an absolute target", () => tarOf([hardlink("h", "/etc/passwd")])],
        ["a hard link through an escaping symlink", () => tarOf([symlink("evil", canary), hardlink("h", "evil/file")])],
        ["a hard link to a missing file", () => tarOf([hardlink("h", "no/such/file")])],
        ["a whiteout naming ..", () => tarOf([file("etc/.wh...", "")])],
        ["a whiteout through an escaping symlink", () => tarOf([symlink("evil", canary), whiteout("evil/victim")])],
        ["an overlay-private xattr", () => tarOf([dir("x", 0o755, { xattrs: { "trusted.overlay.opaque": "y" } })])],
        ["a device node where devices are forbidden", () => tarOf([file("ok", "fine"), { name: "sda", type: TarTypes.Block, devmajor: 8, devminor: 0 }]), "strict"],
        ["a decompression bomb beyond the configured limit", () => gzip(tarOf([file("ok", "fine"), file("zeros", Buffer.alloc(32 * 1024 * 1024))])), "strict"],
        ["a decompression bomb whose gzip trailer claims a small size", () => {
          const g = gzip(tarOf([file("ok", "fine"), file("zeros", Buffer.alloc(32 * 1024 * 1024))]));
          g.writeUInt32LE(4096, g.length - 4);
          return g;
        }, "strict"],
        ["a truncated archive", () => { const t = tarOf([file("ok", "fine"), file("big", Buffer.alloc(100000, 1))]); return gzip(t.subarray(0, 60000)); }],
        ["not a tar at all", () => gzip(Buffer.alloc(4096, 0x41))],
        ["a gzip trailer with a wrong length", () => { const g = gzip(tarOf([file("ok", crypto.randomBytes(100_000))])); g.writeUInt32LE(1000, g.length - 4); return g; }],
        ["a corrupt gzip stream", () => { const g = gzip(tarOf([file("ok", "fine")])); g[20] ^= 0xff; g[30] ^= 0xff; return g; }],
        ["an unsupported entry type", () => tarOf([{ name: "sparse", type: "S", data: "" }])],
      ];
      for (const [name, build, which] of cases) {
        test(name, async () => {
          const key = `hostile-${name.replace(/[^a-z]+/g, "-")}`;
          const m = await fx.sn.prepare(ctx, key, base);
          const before = await withMounted(m, (d) => describeTree(d, { mtime: true }));
          const upper = backend === "overlayfs" ? m[0]!.options.find((o) => o.startsWith("upperdir="))!.slice(9) : m[0]!.source;
          const upperBefore = describeTree(upper, { mtime: true });
          const blob = build();
          const mt = blob[0] === 0x1f ? LayerMediaTypes.OciTarGzip : LayerMediaTypes.OciTar;
          await rejectsWith((which === "strict" ? strict : differ).apply(ctx, desc(content, blob, mt), m), ErrorCodes.InvalidArgument);
          assert.deepEqual(describeTree(upper, { mtime: true }), upperBefore, "the snapshot's own directory is unchanged");
          assert.deepEqual(await withMounted(m, (d) => describeTree(d, { mtime: true })), before, "the mounted snapshot is unchanged");
          assert.deepEqual(fs.readdirSync(canary), [], "nothing was written outside the root");
          assert.deepEqual(fs.readdirSync(path.dirname(upper)).filter((n) => n.startsWith(".apply-")), [], "no staging left behind");
          await fx.sn.remove(ctx, key);
        });
      }

      test("a digest mismatch", async () => {
        const m = await fx.sn.prepare(ctx, "hostile-digest", base);
        const upper = backend === "overlayfs" ? m[0]!.options.find((o) => o.startsWith("upperdir="))!.slice(9) : m[0]!.source;
        const before = describeTree(upper, { mtime: true });
        const good = gzip(tarOf([file("ok", "fine")]));
        const wrong = gzip(tarOf([file("evil", "payload")]));
        const d = content.add(good);
        content.blobs.set(d, { data: wrong, labels: {} }); // the store serves other bytes under that digest
        await rejectsWith(differ.apply(ctx, { mediaType: LayerMediaTypes.OciTarGzip, digest: d, size: wrong.length }, m), ErrorCodes.InvalidArgument, /digest mismatch/);
        assert.deepEqual(describeTree(upper, { mtime: true }), before);
        await fx.sn.remove(ctx, "hostile-digest");
      });

      test("relative symlinks inside the root are followed (not hostile)", async () => {
        const top = await applyChain(fx, differ, content, [[tarOf([dir("real"), symlink("alias", "real"), file("alias/through", "ok")]), tarOf([dir("real"), symlink("alias", "real"), file("alias/through", "ok")])]], "relsym");
        const tree = await viewTree(fx, top, "relsym-view", false);
        assert.ok(tree.some((l) => l.startsWith("real/through file:")), tree.join("\n"));
      });
    });

    test("Diff: the changes between two mounts re-apply to the same tree", async () => {
      const base = await applyChain(fx, differ, content, [[gzip(t1), t1]], "dbase");
      const m = await fx.sn.prepare(ctx, "dwork", base);
      await withMounted(m, (d) => {
        fs.writeFileSync(path.join(d, "etc/passwd"), "changed\n");
        fs.rmSync(path.join(d, "a/gone"));
        fs.rmSync(path.join(d, "usr"), { recursive: true });
        fs.mkdirSync(path.join(d, "fresh/sub"), { recursive: true });
        fs.writeFileSync(path.join(d, "fresh/sub/f"), "f");
        fs.symlinkSync("fresh/sub/f", path.join(d, "fresh-link"));
        fs.linkSync(path.join(d, "fresh/sub/f"), path.join(d, "fresh/hl"));
      });
      const want = await withMounted(m, (d) => describeTree(d));
      const lowerView = await fx.sn.view(ctx, "dlower", base);
      const layer = await differ.compare(ctx, lowerView, m, { labels: { "test/label": "x" } });
      assert.equal(layer.mediaType, LayerMediaTypes.OciTarGzip);
      const blob = content.blobs.get(layer.digest)!;
      assert.ok(blob, "the layer was written to the content store");
      assert.equal(blob.labels["test/label"], "x");
      assert.match(blob.labels[LABEL_UNCOMPRESSED]!, /^sha256:/);
      const m2 = await fx.sn.prepare(ctx, "dreplay", base);
      const applied = await differ.apply(ctx, layer, m2);
      assert.equal(applied.digest, blob.labels[LABEL_UNCOMPRESSED]);
      const got = await withMounted(m2, (d) => describeTree(d));
      assert.deepEqual(got, want);
      for (const k of ["dreplay", "dlower", "dwork", base]) await fx.sn.remove(ctx, k);
    });
  });
}

export type { Mount };
