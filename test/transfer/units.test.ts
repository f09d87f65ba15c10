/** Unit tests: the streaming tar against GNU tar, OCI helpers (labels, ref keys, chain IDs, platforms), import names, write lanes. */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { childrenLabels, chainIds, MediaTypes, normalizePlatform, parsePlatform, platformMatcher, refKey, sha256 } from "#libs/oci";
import { readTar, TAR_END, tarFile, tarHeader, TarFormatError } from "#services/transfer/src/local/tar";
import { importName } from "#services/transfer/src/local/import";
import { familiarName, ociRefName } from "#services/transfer/src/local/export";
import { WriteLanes } from "#services/transfer/src/local/lanes";

async function* chunked(b: Buffer, size: number): AsyncGenerator<Buffer> {
  for (let i = 0; i < b.length; i += size) yield b.subarray(i, i + size);
}

async function entries(b: Buffer, chunk = 777): Promise<{ name: string; type: string; data: string; linkname?: string }[]> {
  const out = [];
  for await (const e of readTar(chunked(b, chunk))) {
    const parts: Buffer[] = [];
    for await (const c of e.body) parts.push(c);
    out.push({ name: e.header.name, type: e.header.type, data: Buffer.concat(parts).toString(), ...(e.header.linkname ? { linkname: e.header.linkname } : {}) });
  }
  return out;
}

describe("transfer - units", () => {
  const long = `${"d".repeat(60)}/${"e".repeat(60)}/${"f".repeat(40)}.txt`;

  it("tar: our archives read back and GNU tar agrees", async () => {
    const b = Buffer.concat([
      tarHeader({ name: "dir/", size: 0, type: "directory" }),
      tarFile("dir/a.txt", Buffer.from("hello")),
      tarFile(long, Buffer.from("long name")),
      tarHeader({ name: "dir/link", size: 0, type: "symlink", linkname: "a.txt" }),
      TAR_END,
    ]);
    assert.deepEqual(await entries(b), [
      { name: "dir/", type: "directory", data: "" },
      { name: "dir/a.txt", type: "file", data: "hello" },
      { name: long, type: "file", data: "long name" },
      { name: "dir/link", type: "symlink", data: "", linkname: "a.txt" },
    ]);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "flt-tar-"));
    try {
      fs.writeFileSync(path.join(dir, "x.tar"), b);
      const r = spawnSync("tar", ["tf", path.join(dir, "x.tar")], { encoding: "utf8" });
      assert.equal(r.status, 0, r.stderr);
      assert.deepEqual(r.stdout.trim().split("\n"), ["dir/", "dir/a.txt", long, "dir/link"]);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  for (const format of ["gnu", "pax", "ustar"]) {
    it(`tar: reads GNU tar's ${format} archives`, async () => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "flt-tar-"));
      try {
        const src = path.join(dir, "src");
        const name = format === "ustar" ? "d/short.txt" : long;
        fs.mkdirSync(path.dirname(path.join(src, name)), { recursive: true });
        fs.writeFileSync(path.join(src, name), "x".repeat(1500));
        const r = spawnSync("tar", [`--format=${format}`, "-C", src, "-cf", path.join(dir, "a.tar"), name], { encoding: "utf8" });
        assert.equal(r.status, 0, r.stderr);
        const es = await entries(fs.readFileSync(path.join(dir, "a.tar")), 100);
        assert.deepEqual(es.map((e) => [e.name, e.data.length]), [[name, 1500]]);
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    });
  }

  it("tar: corrupt and truncated input is refused", async () => {
    await assert.rejects(entries(Buffer.alloc(1024, 7)), TarFormatError);
    const good = Buffer.concat([tarFile("a", Buffer.alloc(5000, 1)), TAR_END]);
    await assert.rejects(entries(good.subarray(0, 2000)), TarFormatError);
  });

  it("oci: gc labels, ref keys, chain IDs", () => {
    const m = (mediaType: string, n: number): { mediaType: string; digest: string } => ({ mediaType, digest: sha256(String(n)) });
    assert.deepEqual(childrenLabels([m(MediaTypes.OciConfig, 0), m(MediaTypes.OciLayerGzip, 1), m(MediaTypes.DockerLayerGzip, 2)]), {
      "containerd.io/gc.ref.content.config": sha256("0"),
      "containerd.io/gc.ref.content.l.0": sha256("1"),
      "containerd.io/gc.ref.content.l.1": sha256("2"),
    });
    assert.deepEqual(Object.keys(childrenLabels([m(MediaTypes.OciManifest, 0), m(MediaTypes.DockerManifest, 1), m(MediaTypes.OciIndex, 2), m("application/x-other", 3)])),
      ["containerd.io/gc.ref.content.m.0", "containerd.io/gc.ref.content.m.1", "containerd.io/gc.ref.content.0", "containerd.io/gc.ref.content.1"]);
    assert.equal(refKey({ mediaType: MediaTypes.OciLayerGzip, digest: "sha256:x" }), "layer-sha256:x");
    assert.equal(refKey({ mediaType: MediaTypes.OciManifest, digest: "sha256:x", annotations: { "org.opencontainers.image.ref.name": "v1" } }), "manifest-v1@sha256:x");
    assert.equal(refKey({ mediaType: "text/plain", digest: "sha256:x" }), "unknown-sha256:x");
    const [a, b] = [sha256("a"), sha256("b")];
    assert.deepEqual(chainIds([a, b]), [a, sha256(`${a} ${b}`)]);
  });

  it("oci: platforms", () => {
    assert.deepEqual(normalizePlatform({ os: "Linux", architecture: "x86_64" }), { os: "linux", architecture: "amd64" });
    assert.deepEqual(parsePlatform("linux/arm64/v8"), { os: "linux", architecture: "arm64" });
    assert.deepEqual(parsePlatform("linux/arm"), { os: "linux", architecture: "arm", variant: "v7" });
    const amd = platformMatcher([{ os: "linux", architecture: "amd64" }]);
    assert.ok(amd({ os: "linux", architecture: "amd64" }));
    assert.ok(!amd({ os: "linux", architecture: "arm64" }));
    assert.ok(!amd({ os: "windows", architecture: "amd64" }));
    const armv7 = platformMatcher([parsePlatform("linux/arm/v7")]);
    assert.ok(armv7({ os: "linux", architecture: "arm", variant: "v6" }));
    assert.ok(!armv7({ os: "linux", architecture: "arm", variant: "v8" }));
  });

  it("import and export names", () => {
    const day = new Date("2024-05-06T00:00:00Z");
    assert.equal(importName({ "io.containerd.image.name": "docker.io/library/x:1" }, undefined, day), "docker.io/library/x:1");
    assert.equal(importName({ "org.opencontainers.image.ref.name": "v2" }, undefined, day), "import-2024-05-06:v2");
    assert.equal(importName({ "org.opencontainers.image.ref.name": "v2" }, "example.com/base", day), "example.com/base:v2");
    assert.equal(importName({}, undefined, day), undefined);
    assert.equal(ociRefName("127.0.0.1:5000/a/b:1.0"), "1.0");
    assert.equal(familiarName("docker.io/library/busybox:latest"), "busybox:latest");
    assert.equal(familiarName("ghcr.io/a/b:1"), "ghcr.io/a/b:1");
  });

  it("write lanes: a later layer's chunk waits while an earlier one writes, never the other way round", async () => {
    const lanes = new WriteLanes(0, 60_000);
    const order: string[] = [];
    const first = lanes.lane(0);
    const second = lanes.lane(1);
    let release!: () => void;
    const held = first.turn(() => new Promise<void>((r) => (release = r)).then(() => order.push("first wrote")));
    const waiting = second.turn(async () => order.push("second wrote"));
    // The earlier lane is not held back by the later one.
    await lanes.lane(0).turn(async () => order.push("another rank 0 wrote"));
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(order, ["another rank 0 wrote"]);
    release();
    await Promise.all([held, waiting]);
    assert.deepEqual(order, ["another rank 0 wrote", "first wrote", "second wrote"]);
    // A closed lane holds no one back; a lane that keeps writing holds a chunk back at most maxWaitMs.
    const slow = new WriteLanes(0, 5);
    const busy = slow.lane(0);
    let stop!: () => void;
    const forever = busy.turn(() => new Promise<void>((r) => (stop = r)));
    assert.equal(await slow.lane(1).turn(async () => "went ahead"), "went ahead");
    stop();
    await forever;
    busy.close();
    first.close();
    assert.equal(await second.turn(async () => "alone"), "alone");
  });
});
