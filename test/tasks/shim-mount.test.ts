/**
 * The shim's rootfs teardown off the hot path (libs/mount detachAll): stacked mounts
 * leave the mount tree at once, kept alive only by the returned descriptors until they are released.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { detachAll, mountAll, releaseDetached } from "#libs/mount";
import { mountsBelow } from "./helpers";

test("shim mount - detachAll takes stacked mounts (overlay on tmpfs) off the tree; their files stay readable through the held descriptors", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "flt-detach-"));
  const target = path.join(dir, "rootfs");
  try {
    fs.mkdirSync(target);
    mountAll([{ type: "tmpfs", source: "tmpfs", options: ["size=1m"] }], target);
    for (const d of ["l", "u", "w", "m"]) fs.mkdirSync(path.join(target, d));
    fs.writeFileSync(path.join(target, "l", "f"), "lower");
    const m = path.join(target, "m");
    mountAll([{ type: "overlay", source: "overlay", options: [`lowerdir=${target}/l`, `upperdir=${target}/u`, `workdir=${target}/w`] }], m);
    fs.writeFileSync(path.join(m, "g"), "upper");
    assert.equal(mountsBelow(dir).length, 2);

    const inner = detachAll(m);
    assert.equal(inner.length, 1);
    assert.equal(fs.readFileSync(`/proc/self/fd/${inner[0]}/f`, "utf8"), "lower", "the detached overlay still serves its files");
    const outer = detachAll(target);
    assert.equal(outer.length, 1);
    assert.deepEqual(mountsBelow(dir), [], "nothing mounted below the directory any more");
    assert.deepEqual(detachAll(target), [], "detaching an unmounted directory holds nothing");
    releaseDetached([...inner, ...outer]);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
