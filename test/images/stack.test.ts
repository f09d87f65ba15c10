/**
 * Issue 5 acceptance, tried as a new user would: the whole stack from `bin/flotilla up`, the real ctr,
 * a docker-registry on loopback holding busybox-static images. Pull (overlayfs and native), ls, check,
 * tag (--force), rm, export / rm --sync / import, images mount / unmount, content fetch, leases, plugins,
 * namespace isolation, what rm --sync leaves on disk, GC metrics, a process that is down during GC, and
 * the concurrent pull / rm / GC hammer verified with `ctr images check`.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as http from "node:http";
import * as os from "node:os";
import * as path from "node:path";
import { background } from "#libs/context";
import { SnapshotterProxy } from "#libs/clients/snapshots";
import { GC_LABELS } from "#libs/core/gc";
import { startStack, sleep, testChannels, waitFor, type Stack } from "../harness";
import { buildBusyboxImage, startRegistry, type BuiltImage, type Registry } from "./registry";

const hex = (d: string): string => d.slice("sha256:".length);

function walk(dir: string, out: string[] = []): string[] {
  let ents: fs.Dirent[];
  try {
    ents = fs.readdirSync(dir, { withFileTypes: true });
  } catch {
    return out;
  }
  for (const e of ents) {
    const p = path.join(dir, e.name);
    out.push(p);
    if (e.isDirectory() && !e.isSymbolicLink()) walk(p, out);
  }
  return out;
}

/** Blob files under the content root whose name is one of the digests. */
function blobsOnDisk(stack: Stack, digests: string[]): string[] {
  const names = new Set(digests.map(hex));
  return walk(path.join(stack.root, "content")).filter((p) => names.has(path.basename(p)));
}

/**
 * Snapshot directories (<snapshotter root>/snapshots/<id>) on disk; with `removing`, also those the
 * snapshots process has renamed away (rm-<id>) and is still deleting in the background.
 */
function snapshotDirsOnDisk(stack: Stack, removing = false): string[] {
  const out: string[] = [];
  for (const sn of ["overlayfs", "native"]) {
    for (const base of [path.join(stack.root, "snapshots", sn, "snapshots"), path.join(stack.root, "snapshots", `io.containerd.snapshotter.v1.${sn}`, "snapshots")]) {
      try {
        for (const e of fs.readdirSync(base)) if (/^\d+$/.test(e) || (removing && e.startsWith("rm-"))) out.push(path.join(base, e));
      } catch {
        /* none */
      }
    }
  }
  return out;
}

function allDigests(img: BuiltImage): string[] {
  return [img.root.digest, img.manifest.digest, img.config.digest, ...img.layers.map((l) => l.digest)];
}

function checkRows(out: string): { ref: string; status: string; unpacked: string }[] {
  return out.split("\n").slice(1).filter(Boolean).map((l) => {
    const f = l.trim().split(/\s+/);
    // REF TYPE DIGEST STATUS(2 words) SIZE(a/b) UNPACKED
    return { ref: f[0]!, status: `${f[3]} ${f[4]}`, unpacked: f[f.length - 1]! };
  });
}

function httpGet(addr: string, p: string): Promise<string> {
  return new Promise((resolve, reject) => {
    http.get(`http://${addr}${p}`, (res) => {
      let b = "";
      res.on("data", (c) => (b += c));
      res.on("end", () => resolve(b));
    }).on("error", reject);
  });
}

describe("images: ctr against the stack and a registry", () => {
  let stack: Stack;
  let reg: Registry;
  let imgA: BuiltImage;
  let imgB: BuiltImage;
  let refA: string;
  let refB: string;
  const ok = async (args: string[], ns = "default"): Promise<string> => {
    const r = await stack.ctr(args, { namespace: ns, timeoutMs: 120000 });
    assert.equal(r.code, 0, `ctr ${args.join(" ")} failed: ${r.stderr}${r.stdout}`);
    return r.stdout;
  };

  before(async () => {
    reg = await startRegistry();
    imgA = buildBusyboxImage({ tag: "a", otherPlatform: true });
    imgB = buildBusyboxImage({ tag: "b", extraLayers: [{ size: 64 * 1024, files: 4 }] });
    await reg.push("test/busybox", "a", imgA);
    await reg.push("test/busybox", "b", imgB);
    refA = `${reg.host}/test/busybox:a`;
    refB = `${reg.host}/test/busybox:b`;
    stack = await startStack({
      metrics: true,
      // a hung process counts as down after 2 s (default 30 s)
      extraToml: '[plugins."io.containerd.gc.v1.scheduler"]\nrpc_timeout = "2s"',
    });
  });

  after(async () => {
    await stack?.stop();
    await reg?.stop();
  });

  it("plugins ls shows the images, leases and gc plugins", async () => {
    const out = await ok(["plugins", "ls"]);
    for (const [type, id] of [
      ["io.containerd.service.v1", "images-service"],
      ["io.containerd.service.v1", "leases-service"],
      ["io.containerd.grpc.v1", "images"],
      ["io.containerd.grpc.v1", "leases"],
      ["io.containerd.gc.v1", "scheduler"],
      ["io.containerd.lease.v1", "manager"],
      ["io.containerd.service.v1", "namespaces-service"],
    ]) {
      assert.match(out, new RegExp(`${type.replace(/\./g, "\\.")}\\s+${id}\\s+-\\s+ok`), `${type} ${id}`);
    }
  });

  it("leases create / ls / rm", async () => {
    assert.equal((await ok(["leases", "create", "--id", "mine", "--expires", "1h", "team=x"])).trim(), "mine");
    const gen = (await ok(["leases", "create"])).trim();
    assert.match(gen, /^\d+-[A-Za-z0-9_-]{4}$/);
    const ls = await ok(["leases", "ls"]);
    assert.match(ls, /mine\s+\S+\s+containerd\.io\/gc\.expire=\S+,team=x|mine\s+\S+\s+team=x,containerd\.io\/gc\.expire=\S+/);
    assert.match(ls, new RegExp(gen));
    assert.deepEqual((await ok(["leases", "ls", "-q", "labels.team==x"])).trim().split("\n"), ["mine"]);
    assert.equal((await ok(["leases", "rm", "mine", gen])).trim().split("\n").length, 2);
    const r = await stack.ctr(["leases", "rm", "mine"]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /lease "mine": not found/);
    assert.equal((await ok(["leases", "ls", "-q"])).trim(), "");
  });

  it("pull, ls, check (complete and unpacked), content and snapshots on disk", async () => {
    await ok(["images", "pull", "--plain-http", refA]);
    const ls = await ok(["images", "ls"]);
    assert.match(ls, new RegExp(`${refA.replace(/[.:/]/g, "\\$&")}\\s+application/vnd\\.oci\\.image\\.index\\.v1\\+json\\s+${imgA.root.digest}\\s+[\\d.]+ [KM]iB\\s+linux/amd64,linux/arm64`));
    assert.deepEqual((await ok(["images", "ls", "-q"])).trim().split("\n"), [refA]);
    const rows = checkRows(await ok(["images", "check"]));
    assert.equal(rows.length, 1);
    assert.equal(rows[0]!.ref, refA);
    assert.match(rows[0]!.status, /^complete/);
    assert.equal(rows[0]!.unpacked, "true");
    assert.equal(blobsOnDisk(stack, allDigests(imgA)).length, 5);
    assert.equal(snapshotDirsOnDisk(stack).length, 2);
    assert.equal((await ok(["leases", "ls", "-q"])).trim(), "", "the pull's lease is gone");
  });

  it("pull again (AlreadyExists -> Update), label, and the image events ctr events shows", async () => {
    const ev = stack.ctrSpawn(["events"]);
    let out = "";
    ev.stdout!.on("data", (b: Buffer) => (out += b.toString()));
    try {
      await sleep(300);
      await ok(["images", "pull", "--plain-http", refA]);
      assert.deepEqual((await ok(["images", "label", refA, "team=blue", "tier=1"])).trim().split(",").sort(), ["team=blue", "tier=1"]);
      await ok(["images", "label", refA, "tier="]);
      assert.match(await ok(["images", "ls", "labels.team==blue"]), /team=blue/);
      assert.doesNotMatch(await ok(["images", "ls", "labels.team==blue"]), /tier=/);
      await ok(["images", "tag", refA, "events/tmp:1"]);
      await ok(["images", "rm", "events/tmp:1"]);
      await waitFor("the image events", () => (out.includes("/images/delete") ? true : undefined), 5000);
    } finally {
      ev.kill("SIGTERM");
    }
    const lines = out.split("\n").filter((l) => l.includes(" /images/"));
    const topics = lines.map((l) => l.split(" ")[5]);
    assert.ok(topics.includes("/images/update"), out);
    assert.ok(lines.some((l) => l.includes("/images/create") && l.includes('"name":"events/tmp:1"')), out);
    assert.ok(lines.some((l) => l.includes("/images/delete") && l.includes('"name":"events/tmp:1"')), out);
    assert.ok(lines.some((l) => l.includes("/images/update") && l.includes('"team":"blue"')), out);
    assert.ok(lines.every((l) => l.split(" ")[4] === "default"), "in the caller's namespace");
  });

  it("images in one namespace are invisible in another", async () => {
    assert.equal((await ok(["images", "ls", "-q"], "other-ns")).trim(), "");
    const r = await stack.ctr(["images", "rm", refA], { namespace: "other-ns" });
    assert.equal(r.code, 0);
    assert.match(r.stderr, /not found/);
    assert.deepEqual((await ok(["images", "ls", "-q"])).trim().split("\n"), [refA]);
  });

  it("tag, tag again (error), tag --force, filters", async () => {
    assert.equal((await ok(["images", "tag", refA, "local/a:1"])).trim(), "local/a:1");
    const again = await stack.ctr(["images", "tag", refA, "local/a:1"]);
    assert.notEqual(again.code, 0);
    assert.match(again.stderr, /already exists/);
    await ok(["images", "pull", "--plain-http", refB]);
    assert.equal((await ok(["images", "tag", "--force", refB, "local/a:1"])).trim(), "local/a:1");
    const ls = await ok(["images", "ls", "name==local/a:1"]);
    assert.match(ls, new RegExp(imgB.root.digest));
    assert.deepEqual((await ok(["images", "ls", "-q", `target.digest==${imgB.root.digest}`])).trim().split("\n").sort(), ["local/a:1", refB].sort());
    assert.equal((await ok(["images", "ls", "-q", "target.mediatype==application/vnd.oci.image.index.v1+json"])).trim().split("\n").length, 3);
  });

  it("rm: a missing image is a warning; rm --sync of the last reference frees its blobs and snapshots on disk", async () => {
    const missing = await stack.ctr(["images", "rm", "no/such:image"]);
    assert.equal(missing.code, 0);
    assert.match(missing.stderr, /no\/such:image: image not found/);
    const uniqueB = allDigests(imgB).filter((d) => !allDigests(imgA).includes(d));
    assert.ok(blobsOnDisk(stack, uniqueB).length > 0);
    const snapsBefore = snapshotDirsOnDisk(stack).length;
    await ok(["images", "rm", refB]);
    assert.ok(blobsOnDisk(stack, uniqueB).length > 0, "still referenced by local/a:1");
    assert.equal((await ok(["images", "rm", "--sync", "local/a:1"])).trim(), "local/a:1");
    assert.deepEqual(blobsOnDisk(stack, uniqueB), [], "rm --sync returns after its garbage is gone");
    assert.ok(snapshotDirsOnDisk(stack).length < snapsBefore);
    assert.equal(blobsOnDisk(stack, allDigests(imgA)).length, 5, "what the other image uses stays");
    const check = checkRows(await ok(["images", "check"]));
    assert.equal(check.length, 1);
    assert.match(check[0]!.status, /^complete/);
  });

  it("export, rm --sync of the only image (nothing left on disk), import, check", async () => {
    const tar = path.join(stack.dir, "a.tar");
    await ok(["images", "export", tar, refA]);
    assert.ok(fs.statSync(tar).size > 100000);
    await ok(["images", "rm", "--sync", refA]);
    assert.equal((await ok(["images", "ls", "-q"])).trim(), "");
    assert.deepEqual(blobsOnDisk(stack, allDigests(imgA)), []);
    assert.deepEqual(snapshotDirsOnDisk(stack), []);
    // the snapshots process deletes renamed directories in the background: gone shortly after
    await waitFor("the snapshot directories to be deleted", () => (snapshotDirsOnDisk(stack, true).length === 0 ? true : undefined), 10000, 50);
    assert.equal((await ok(["content", "ls", "-q"])).trim(), "");
    assert.equal((await ok(["snapshots", "ls"])).trim().split("\n").length, 1, "only the header");
    await ok(["images", "import", tar]);
    const rows = checkRows(await ok(["images", "check"]));
    assert.ok(rows.some((r) => r.ref === refA && r.status.startsWith("complete") && r.unpacked === "true"), JSON.stringify(rows));
    assert.equal((await ok(["leases", "ls", "-q"])).trim(), "");
  });

  it("pull with the native snapshotter, check it unpacked there", async () => {
    await ok(["images", "pull", "--plain-http", "--snapshotter", "native", refB]);
    const rows = checkRows(await ok(["images", "check", "--snapshotter", "native", `name==${refB}`]));
    assert.equal(rows.length, 1);
    assert.match(rows[0]!.status, /^complete/);
    assert.equal(rows[0]!.unpacked, "true");
    assert.match(await ok(["snapshots", "--snapshotter", "native", "ls"]), /Committed/);
    await ok(["images", "rm", "--sync", refB]);
    assert.equal((await ok(["snapshots", "--snapshotter", "native", "ls"])).trim().split("\n").length, 1, "GC cleaned the native snapshotter");
  });

  it("content fetch: blobs without unpacking, then collected once unreferenced", async () => {
    await ok(["content", "fetch", "--plain-http", refB]);
    assert.equal(blobsOnDisk(stack, allDigests(imgB)).length, allDigests(imgB).length);
    const rows = checkRows(await ok(["images", "check", `name==${refB}`]));
    assert.equal(rows[0]!.unpacked, "false");
    await ok(["images", "rm", "--sync", refB]);
    assert.deepEqual(blobsOnDisk(stack, allDigests(imgB).filter((d) => !allDigests(imgA).includes(d))), []);
  });

  it("images mount / unmount --rm", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "flt-mnt-"));
    try {
      await ok(["images", "mount", refA, dir]);
      assert.equal(fs.readFileSync(path.join(dir, "etc", "flotilla-tag"), "utf8"), "a\n");
      assert.ok(fs.statSync(path.join(dir, "bin", "busybox")).size > 100000);
      assert.match(await ok(["leases", "ls"]), new RegExp(dir.replace(/[/.]/g, "\\$&")));
      // the mount's lease protects its snapshot even without the image
      await ok(["images", "rm", "--sync", refA]);
      assert.match(await ok(["snapshots", "ls"]), new RegExp(dir.replace(/[/.]/g, "\\$&")));
      await ok(["images", "unmount", "--rm", dir]);
      assert.equal((await ok(["leases", "ls", "-q"])).trim(), "");
      await ok(["leases", "create", "--id", "sync-trigger"]);
      await ok(["leases", "rm", "--sync", "sync-trigger"]);
      assert.equal((await ok(["snapshots", "ls"])).trim().split("\n").length, 1, "the view and its parents are collected");
      assert.deepEqual(blobsOnDisk(stack, allDigests(imgA)), []);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it("namespaces with images or leases cannot be deleted", async () => {
    await ok(["leases", "create", "--id", "hold"], "busy-ns");
    const r = await stack.ctr(["namespaces", "rm", "busy-ns"]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /namespace "busy-ns" must be empty, but it still has leases/);
    await ok(["leases", "rm", "hold"], "busy-ns");
    await ok(["namespaces", "rm", "busy-ns"]);
  });

  it("a namespace with snapshots on any loaded snapshotter cannot be deleted", async () => {
    const ctx = background("snap-ns");
    const native = SnapshotterProxy.connect(testChannels.get(stack.socket), "native");
    await native.prepare(ctx, "kept", "", { labels: { [GC_LABELS.root]: "1" } });
    const r = await stack.ctr(["namespaces", "rm", "snap-ns"]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /namespace "snap-ns" must be empty, but it still has snapshots on "native" snapshotter/);
    await native.remove(ctx, "kept");
    await ok(["namespaces", "rm", "snap-ns"]);
  });

  it("GC metrics count what passes freed and how long they took", async () => {
    const m = await httpGet(stack.metricsAddress("images"), "/metrics");
    const freed = Number(/flotilla_gc_freed_total\{resource="content"[^}]*\} (\d+)/.exec(m)?.[1] ?? "0");
    assert.ok(freed >= 5, m.split("\n").filter((l) => l.startsWith("flotilla_gc")).join("\n"));
    assert.match(m, /flotilla_gc_duration_seconds_count\{[^}]*\} [1-9]/);
    assert.match(m, /flotilla_gc_passes_total\{result="ok"[^}]*\} [1-9]/);
  });

  it("a process that is down during GC: its data is skipped, then collected once it is back", async () => {
    await ok(["images", "pull", "--plain-http", refB]);
    const pid = stack.pidOf("snapshots")!;
    process.kill(pid, "SIGSTOP");
    try {
      const t = Date.now();
      await ok(["images", "rm", "--sync", refB]);
      assert.ok(Date.now() - t < 15000);
      assert.equal(blobsOnDisk(stack, allDigests(imgB)).length, allDigests(imgB).length, "nothing deleted while a source is unreachable");
    } finally {
      process.kill(pid, "SIGCONT");
    }
    await waitFor("the retried pass to free the image", () => (blobsOnDisk(stack, allDigests(imgB)).length === 0 ? true : undefined), 20000, 200);
    await waitFor("the snapshots to go", async () => ((await ok(["snapshots", "ls"])).trim().split("\n").length === 1 ? true : undefined), 20000, 200);
  });

  it("kill -9 of the images process keeps its images and leases", async () => {
    await ok(["images", "pull", "--plain-http", refA]);
    await ok(["leases", "create", "--id", "survivor", "k=v"]);
    const before = await ok(["images", "ls"]);
    const old = stack.kill("images", "SIGKILL");
    await stack.waitRestarted("images", old);
    assert.equal(await ok(["images", "ls"]), before);
    assert.match(await ok(["leases", "ls"]), /survivor\s+\S+\s+\S*k=v/);
    assert.match(checkRows(await ok(["images", "check"]))[0]!.status, /^complete/);
    await ok(["leases", "rm", "survivor"]);
  });

  it("hammer: concurrent pulls, removals and collections never break an image", async (t) => {
    const until = Date.now() + 20000;
    const errors: string[] = [];
    let ops = 0;
    let checked = 0;
    const broken: string[] = [];
    const tolerate = (r: { code: number; stderr: string }, what: string): void => {
      ops++;
      if (r.code !== 0) errors.push(`${what}: ${r.stderr.trim().split("\n").pop()}`);
    };
    const worker = async (i: number): Promise<void> => {
      const mine = `hammer/${i}:x`;
      while (Date.now() < until) {
        const ref = Math.random() < 0.5 ? refA : refB;
        tolerate(await stack.ctr(["images", "pull", "--plain-http", ref], { timeoutMs: 60000 }), `pull ${ref}`);
        const tagged = await stack.ctr(["images", "tag", "--force", ref, mine]);
        tolerate(tagged, "tag");
        if (tagged.code === 0) {
          // only this worker touches `mine`: while GC and the other workers run, it must stay complete
          const rows = checkRows(await ok(["images", "check", `name==${mine}`]));
          checked++;
          if (rows.length !== 1 || !rows[0]!.status.startsWith("complete")) broken.push(`${mine}: ${JSON.stringify(rows)}`);
        }
        tolerate(await stack.ctr(["images", "rm", ...(Math.random() < 0.5 ? ["--sync"] : []), ref]), "rm");
        if (Math.random() < 0.3) tolerate(await stack.ctr(["images", "rm", mine]), "rm mine");
      }
      // Leave this worker's image behind (whatever the random removals did) for the checks below.
      const ref = i % 2 === 0 ? refA : refB;
      tolerate(await stack.ctr(["images", "pull", "--plain-http", ref], { timeoutMs: 60000 }), `pull ${ref}`);
      tolerate(await stack.ctr(["images", "tag", "--force", ref, mine]), "tag");
    };
    const collector = async (): Promise<void> => {
      let n = 0;
      while (Date.now() < until) {
        tolerate(await stack.ctr(["leases", "create", "--id", `gc-${n}`]), "lease");
        tolerate(await stack.ctr(["leases", "rm", "--sync", `gc-${n++}`]), "lease rm --sync");
        await sleep(50);
      }
    };
    await Promise.all([worker(0), worker(1), worker(2), collector()]);
    // Errors of individual commands are allowed (e.g. "not found" races between workers) but not
    // broken content: every image left must be complete.
    const rows = checkRows(await ok(["images", "check"]));
    assert.deepEqual(broken, [], "no image checked during the hammer was incomplete");
    t.diagnostic(`${checked} checks during the run, ${ops} other commands, ${errors.length} failed (${[...new Set(errors.map((e) => e.replace(/sha256:\w+/g, "<digest>")))].slice(0, 4).join("; ")}); left: ${rows.map((r) => `${r.ref} ${r.status} unpacked=${r.unpacked}`).join(", ")}`);
    assert.ok(rows.length > 0, "some images remain");
    for (const r of rows) assert.match(r.status, /^complete/, `${r.ref}: ${r.status} (command errors: ${errors.slice(0, 5).join("; ")})`);
    // and once everything is gone, nothing is left behind
    for (const r of rows) await ok(["images", "rm", r.ref]);
    await ok(["leases", "create", "--id", "final"]);
    await ok(["leases", "rm", "--sync", "final"]);
    assert.equal((await ok(["content", "ls", "-q"])).trim(), "");
    assert.equal((await ok(["snapshots", "ls"])).trim().split("\n").length, 1);
    assert.deepEqual(blobsOnDisk(stack, [...allDigests(imgA), ...allDigests(imgB)]), []);
  });
});
