/**
 * The shim's own start and delete of runc containers (services/shim/src/direct.ts), against real runc:
 * a created container runs once its exec FIFO is read, a stopped one's cgroups and state go, and
 * anything unusual is left to runc.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { deleteStopped, directCapable, startViaExecFifo } from "#services/shim/src/direct";
import { mkfifo } from "#libs/sys/linux";
import { busyboxRootfs } from "./helpers";

function runcState(root: string, id: string): { status: string } | undefined {
  const r = spawnSync("runc", ["--root", root, "state", id], { encoding: "utf8" });
  return r.status === 0 ? (JSON.parse(r.stdout) as { status: string }) : undefined;
}

test("shim direct - a created runc container starts when its exec FIFO is read, and its stopped state is removed as runc delete does", async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "flt-direct-"));
  const root = path.join(dir, "runc");
  const bundle = path.join(dir, "bundle");
  const id = `direct-${process.pid}`;
  try {
    fs.mkdirSync(bundle);
    const rootfs = busyboxRootfs(path.join(dir, "rootfs"));
    execFileSync("runc", ["spec", "--bundle", bundle]);
    const spec = JSON.parse(fs.readFileSync(path.join(bundle, "config.json"), "utf8"));
    spec.process.terminal = false;
    spec.process.args = ["sh", "-c", "exit 0"];
    spec.root = { path: rootfs, readonly: true };
    fs.writeFileSync(path.join(bundle, "config.json"), JSON.stringify(spec));
    execFileSync("runc", ["--root", root, "create", "--bundle", bundle, id], { stdio: "ignore" });
    const stateDir = path.join(root, id);
    assert.equal(runcState(root, id)?.status, "created");
    const cgroups = Object.values((JSON.parse(fs.readFileSync(path.join(stateDir, "state.json"), "utf8")) as { cgroup_paths: Record<string, string> }).cgroup_paths);
    assert.ok(cgroups.length > 0 && cgroups.every((p) => fs.existsSync(p)), "runc made the container's cgroups");

    assert.equal(deleteStopped(stateDir), false, "a cgroup with the waiting init in it is busy: left to runc");
    assert.ok(fs.existsSync(path.join(stateDir, "state.json")), "the state stays when the cgroups could not go");

    assert.equal(await startViaExecFifo(stateDir, new Promise(() => undefined)), true);
    assert.equal(fs.existsSync(path.join(stateDir, "exec.fifo")), false, "the FIFO is removed, as runc start does");
    for (let i = 0; i < 200 && runcState(root, id)?.status !== "stopped"; i++) await new Promise((r) => setTimeout(r, 25));
    assert.equal(runcState(root, id)?.status, "stopped", "the container ran its process to the end");

    assert.equal(deleteStopped(stateDir), true);
    assert.equal(fs.existsSync(stateDir), false);
    assert.deepEqual(cgroups.filter((p) => fs.existsSync(p)), [], "every cgroup of the container is gone");
    assert.equal(runcState(root, id), undefined, "runc no longer knows the container");
  } finally {
    spawnSync("runc", ["--root", root, "delete", "--force", id], { stdio: "ignore" });
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("shim direct - without a FIFO, or when the init is gone without writing to it, start is left to runc", async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "flt-direct-"));
  try {
    assert.equal(await startViaExecFifo(dir, new Promise(() => undefined)), false, "no exec.fifo");
    mkfifo(path.join(dir, "exec.fifo"), 0o600);
    assert.equal(await startViaExecFifo(dir, Promise.resolve()), false, "the init exited and nothing was written");
    assert.ok(fs.existsSync(path.join(dir, "exec.fifo")), "a FIFO that gave nothing stays for runc to judge");
    assert.equal(deleteStopped(path.join(dir, "missing")), false, "no runc state to remove");
    assert.equal(directCapable("/usr/sbin/runc", false), !process.env.NOTIFY_SOCKET);
    assert.equal(directCapable("crun", false), false, "other runtimes keep their own start and delete");
    assert.equal(directCapable("runc", true), false, "systemd cgroups are runc's to remove");
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
