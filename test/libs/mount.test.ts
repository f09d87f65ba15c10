/**
 * libs/mount against the real kernel: option words to flags and data, an overlay whose lowerdirs do
 * not fit in a page (mounted from their common directory), a read-only bind, options too long for
 * any trick, a failed component undoing the ones before it, and the wire converters.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { errorCode } from "#libs/errdefs";
import { mountsBelow } from "#libs/cni/netns";
import { compactLowerdir, mountAll, mountFromProto, mountToProto, parseOptions, unmountAll, type Mount } from "#libs/mount";
import { MountFlags as F } from "#libs/sys/linux";

function tempDir(t: { after(fn: () => void): void }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "flt-mount-"));
  t.after(() => {
    for (const m of mountsBelow(dir).sort((a, b) => b.length - a.length)) unmountAll(m);
    fs.rmSync(dir, { recursive: true, force: true });
  });
  return dir;
}

test("mount options: flag words set and clear mount(2) flags in order, propagation apart, the rest is data", () => {
  const p = parseOptions(["defaults", "rbind", "ro", "nosuid", "nodev", "rw", "noexec", "exec", "rslave", "index=off", "lowerdir=/a:/b"]);
  assert.equal(p.flags, F.MS_BIND | F.MS_REC | F.MS_NOSUID | F.MS_NODEV);
  assert.equal(p.propagation, F.MS_SLAVE | F.MS_REC);
  assert.deepEqual(p.data, ["index=off", "lowerdir=/a:/b"]);
  assert.equal(parseOptions(["remount", "ro", "sync", "async", "runbindable"]).flags, F.MS_REMOUNT | F.MS_RDONLY);
  assert.equal(parseOptions(["runbindable"]).propagation, F.MS_UNBINDABLE | F.MS_REC);
});

test("mount: an overlay whose lowerdirs pass a page is mounted from their common directory, the process's directory unchanged", (t) => {
  const root = path.join(tempDir(t), "io.containerd.snapshotter.v1.overlayfs", "snapshots");
  const ids = Array.from({ length: 120 }, (_, i) => 1000 + i);
  for (const id of ids) fs.mkdirSync(path.join(root, String(id), "fs"), { recursive: true });
  fs.writeFileSync(path.join(root, "1000", "fs", "bottom"), "first layer");
  fs.writeFileSync(path.join(root, "1119", "fs", "top"), "last layer");
  for (const d of ["upper", "work", "merged"]) fs.mkdirSync(path.join(root, d));
  const lowerdir = `lowerdir=${ids.reverse().map((id) => path.join(root, String(id), "fs")).join(":")}`;
  const m: Mount = { type: "overlay", source: "overlay", options: ["index=off", `upperdir=${root}/upper`, `workdir=${root}/work`, lowerdir] };
  assert.ok(m.options.join(",").length > 4096, "the options as given do not fit in mount(2)'s page");
  const compact = compactLowerdir(m.options);
  assert.equal(compact.chdir, root);
  assert.ok(compact.data.join(",").length < 2048);

  const cwd = process.cwd();
  const merged = path.join(root, "merged");
  mountAll([m], merged);
  assert.equal(process.cwd(), cwd);
  assert.equal(fs.readFileSync(path.join(merged, "bottom"), "utf8"), "first layer");
  assert.equal(fs.readFileSync(path.join(merged, "top"), "utf8"), "last layer");
  fs.writeFileSync(path.join(merged, "new"), "x");
  assert.ok(fs.existsSync(path.join(root, "upper", "new")), "writes go to the upper directory");
  unmountAll(merged);
  assert.deepEqual(mountsBelow(merged), []);
});

test("mount: a read-only bind is read-only (remounted after the bind), its source still writable", (t) => {
  const dir = tempDir(t);
  const src = path.join(dir, "src");
  const target = path.join(dir, "target");
  fs.mkdirSync(src);
  fs.mkdirSync(target);
  fs.writeFileSync(path.join(src, "f"), "data");
  mountAll([{ type: "bind", source: src, options: ["rbind", "ro"] }], target);
  assert.equal(fs.readFileSync(path.join(target, "f"), "utf8"), "data");
  assert.throws(() => fs.writeFileSync(path.join(target, "g"), "no"), { code: "EROFS" });
  fs.writeFileSync(path.join(src, "g"), "yes");
  assert.equal(fs.readFileSync(path.join(target, "g"), "utf8"), "yes");
  unmountAll(target);
  assert.deepEqual(mountsBelow(target), []);
});

test("mount: options too long for a page are InvalidArgument; a failed component undoes the ones mounted before it", (t) => {
  const dir = tempDir(t);
  const target = path.join(dir, "target");
  fs.mkdirSync(target);
  assert.throws(() => mountAll([{ type: "tmpfs", source: "tmpfs", options: [`size=1m`, `x=${"y".repeat(5000)}`] }], target), (e: Error) => {
    assert.equal(errorCode(e), "invalid argument");
    assert.match(e.message, /^mount options is too long \(\d+ bytes\) for tmpfs on /);
    return true;
  });
  assert.throws(
    () => mountAll([{ type: "tmpfs", source: "tmpfs", options: ["size=1m"] }, { type: "flotilla-nofs", source: "none", options: [] }], target),
    (e: Error) => {
      assert.match(e.message, /^failed to mount rootfs component \{"type":"flotilla-nofs","source":"none","options":\[\]\}: mount flotilla-nofs none on .*: ENODEV$/);
      assert.equal(errorCode(e), "unknown", "a raw errno code does not pass for an errdefs class");
      return true;
    },
  );
  assert.deepEqual(mountsBelow(target), [], "the tmpfs mounted first is gone");
  unmountAll(target);
});

test("mount wire form: containerd.types.Mount both ways; an empty target is left out", () => {
  const m: Mount = { type: "overlay", source: "overlay", options: ["ro", "lowerdir=/a"] };
  const wire = mountToProto(m);
  assert.deepEqual(wire, { type: "overlay", source: "overlay", target: "", options: ["ro", "lowerdir=/a"] });
  assert.notEqual(wire.options, m.options, "the options are copied");
  assert.deepEqual(mountFromProto(wire), m);
  assert.deepEqual(mountFromProto({ type: "bind", source: "/s", target: "/t" }), { type: "bind", source: "/s", target: "/t", options: [] });
});
