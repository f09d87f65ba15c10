/**
 * copyTree (the native snapshotter's copy of a parent): small trees are copied in-process, larger
 * ones by `cp -a`; both keep every kind of entry and its owner, mode, times, xattrs and hard links,
 * and the root directory's own attributes. removeTree removes small and large trees of every kind
 * (and a lone file; a missing path is fine). The snapshots directory is an ext4 top directory.
 */
import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { spawnSync } from "node:child_process";
import { NativeBackend, snapshotsDir } from "#services/snapshots/src/local/backends";
import { copyTree, removeTree } from "#services/snapshots/src/local/fsutil";
import * as sys from "#libs/sys/linux";
import { describeTree } from "./layers";

const base = fs.mkdtempSync(path.join(os.tmpdir(), "flt-copy-"));
after(() => fs.rmSync(base, { recursive: true, force: true }));

/** A tree with one of everything, plus `extra` more files. */
function buildTree(root: string, extra: number): void {
  fs.mkdirSync(root);
  fs.mkdirSync(path.join(root, "etc/deep"), { recursive: true });
  fs.writeFileSync(path.join(root, "etc/passwd"), "root:x:0:0\n");
  fs.chownSync(path.join(root, "etc/passwd"), 1000, 1001);
  fs.chmodSync(path.join(root, "etc/passwd"), 0o640);
  fs.writeFileSync(path.join(root, "etc/deep/su"), "su");
  fs.chmodSync(path.join(root, "etc/deep/su"), 0o4755);
  fs.linkSync(path.join(root, "etc/passwd"), path.join(root, "passwd-link"));
  fs.symlinkSync("etc/passwd", path.join(root, "rel-link"));
  fs.symlinkSync("/nowhere", path.join(root, "abs-link"));
  sys.mknod(path.join(root, "null"), sys.S_IFCHR | 0o666, sys.makedev(1, 3));
  sys.mknod(path.join(root, "fifo"), sys.S_IFIFO | 0o600);
  sys.lsetxattr(path.join(root, "etc/passwd"), "user.origin", Buffer.from("test"));
  fs.mkdirSync(path.join(root, "private"), 0o700);
  fs.chownSync(path.join(root, "private"), 7, 8);
  for (let i = 0; i < extra; i++) fs.writeFileSync(path.join(root, "private", `f${i}`), `file ${i}`);
  for (const p of ["etc/passwd", "etc/deep/su", "etc/deep", "etc", "private", ""]) fs.utimesSync(path.join(root, p), 1600000000, 1600000000 + p.length);
  fs.lutimesSync(path.join(root, "rel-link"), 1500000000, 1500000000);
  fs.chmodSync(root, 0o751);
}

/** describeTree with directory times and the root's own attributes. */
function full(root: string): string[] {
  const dirTimes = (p: string): string => {
    const st = fs.lstatSync(p);
    return `${path.relative(root, p) || "."} mtime=${Math.floor(st.mtimeMs / 1000)} mode=${(st.mode & 0o7777).toString(8)} uid=${st.uid}`;
  };
  return [...describeTree(root, { mtime: true }), dirTimes(root), dirTimes(path.join(root, "etc")), dirTimes(path.join(root, "etc/deep")), dirTimes(path.join(root, "private"))];
}

describe("copyTree", () => {
  for (const [name, extra] of [["a small tree (in-process)", 2], ["a large tree (cp -a)", 400]] as const) {
    test(`${name} is copied with every attribute`, async () => {
      const src = path.join(base, `src-${extra}`);
      const dst = path.join(base, `dst-${extra}`);
      buildTree(src, extra);
      fs.mkdirSync(dst, 0o755);
      await copyTree(src, dst);
      assert.deepEqual(full(dst), full(src));
      const a = fs.lstatSync(path.join(dst, "etc/passwd"));
      assert.equal(fs.lstatSync(path.join(dst, "passwd-link")).ino, a.ino, "hard links stay linked");
      assert.notEqual(a.ino, fs.lstatSync(path.join(src, "etc/passwd")).ino, "a copy, not a link to the source");
    });
  }

  test("an empty tree copies the root's attributes only", async () => {
    const src = path.join(base, "empty-src");
    const dst = path.join(base, "empty-dst");
    fs.mkdirSync(src, 0o710);
    fs.chownSync(src, 3, 4);
    fs.mkdirSync(dst, 0o755);
    await copyTree(src, dst);
    const st = fs.statSync(dst);
    assert.deepEqual([st.mode & 0o7777, st.uid, st.gid, fs.readdirSync(dst).length], [0o710, 3, 4, 0]);
  });
});

describe("removeTree", () => {
  for (const [name, extra] of [["a small tree", 2], ["a large tree", 400]] as const) {
    test(`${name} is removed whole`, async () => {
      const root = path.join(base, `rm-${extra}`);
      buildTree(root, extra);
      // An unreadable directory too (as overlayfs leaves its work/work): root may still remove it.
      fs.mkdirSync(path.join(root, "work/work"), { recursive: true });
      fs.chmodSync(path.join(root, "work/work"), 0);
      await removeTree(root);
      assert.equal(fs.existsSync(root), false);
    });
  }

  test("a lone file goes, a missing path is no error", async () => {
    const f = path.join(base, "rm-file");
    fs.writeFileSync(f, "x");
    await removeTree(f);
    assert.equal(fs.existsSync(f), false);
    await removeTree(path.join(base, "never-there"));
  });
});

test("a snapshotter's snapshots directory is marked as a top directory (where the filesystem has the flag)", (t) => {
  const probe = path.join(base, "probe");
  fs.mkdirSync(probe);
  if (!sys.setTopDir(probe)) return t.skip("no inode flags on this filesystem");
  const b = new NativeBackend(path.join(base, "native-root"));
  const out = spawnSync("lsattr", ["-d", snapshotsDir(b.root)], { encoding: "utf8" });
  assert.equal(out.status, 0, out.stderr);
  assert.match(out.stdout.split(" ")[0]!, /T/);
});
