/**
 * `ctr run` from a pulled image, as a new user would: a busybox image pushed to a local
 * docker-registry, `ctr images pull --plain-http`, then run --rm (output, exit code) on both
 * snapshotters, run -d + exec + kill, and `containers rm` removing the container's snapshot.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import * as path from "node:path";
import { startStack, type Stack } from "../harness";
import { startRegistry, type Registry } from "../helpers/registry";
import { buildBusyboxImage, pushImage } from "../helpers/image";
import { EventsWatcher, mountsBelow, stopStackAndCleanup, waitTaskStatus } from "./helpers";

describe("tasks - ctr run from a pulled image", () => {
  let stack: Stack;
  let reg: Registry;
  let ref: string;
  let events: EventsWatcher;

  before(async () => {
    reg = await startRegistry();
    await pushImage(reg, "test/busybox", "latest", buildBusyboxImage({ applets: ["sh", "cat", "echo", "true", "false", "sleep", "ls", "hostname", "env"] }));
    ref = `${reg.host}/test/busybox:latest`;
    stack = await startStack();
    events = new EventsWatcher(stack);
    await events.ready();
    const p = await stack.ctr(["images", "pull", "--plain-http", ref], { timeoutMs: 120000 });
    assert.equal(p.code, 0, p.stderr);
  });

  after(async () => {
    events?.stop();
    await stopStackAndCleanup(stack);
    await reg?.stop();
  });

  test("run --rm IMAGE: the image's PATH, output and exit code, on overlayfs and native", async () => {
    for (const sn of ["overlayfs", "native"]) {
      const id = `img-${sn}`;
      const r = await stack.ctr(["run", "--rm", "--snapshotter", sn, ref, id, "sh", "-c", "echo $PATH; ls /bin/busybox; exit 6"]);
      assert.equal(r.code, 6, `${sn}: ${r.stderr}`);
      assert.equal(r.stdout, "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n/bin/busybox\n");
    }
    const ok = await stack.ctr(["run", "--rm", ref, "img-true", "true"]);
    assert.equal(ok.code, 0, ok.stderr);
    await events.waitFor("img-true removed", (l) => l.some((e) => e.topic === "/containers/delete" && e.json.id === "img-true"));
    const topics = events.lines.filter((e) => e.json.id === "img-true" || e.json.container_id === "img-true" || e.json.key === "img-true").map((e) => e.topic);
    // Per-publisher order only: the snapshots process publishes its own events.
    assert.deepEqual(topics.filter((t) => !t.startsWith("/snapshot/")), ["/containers/create", "/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete", "/containers/delete"]);
    assert.deepEqual(topics.filter((t) => t.startsWith("/snapshot/")), ["/snapshot/prepare", "/snapshot/remove"]);
    const snaps = await stack.ctr(["snapshots", "ls"]);
    assert.doesNotMatch(snaps.stdout, /img-/, "--rm removed the containers' snapshots");
    assert.deepEqual(mountsBelow(path.join(stack.state, "tasks")), []);
  });

  test("run -d IMAGE, exec, kill, then task and container removal", async () => {
    const d = await stack.ctr(["run", "-d", ref, "img-d", "sleep", "1000"]);
    assert.equal(d.code, 0, d.stderr);
    await waitTaskStatus(stack, "img-d", "RUNNING");
    const ex = await stack.ctr(["t", "exec", "--exec-id", "e", "img-d", "sh", "-c", "echo written > /tmp/f; cat /tmp/f"]);
    assert.equal(ex.code, 0, ex.stderr);
    assert.equal(ex.stdout, "written\n");
    assert.equal((await stack.ctr(["t", "kill", "-s", "SIGKILL", "img-d"])).code, 0);
    await waitTaskStatus(stack, "img-d", "STOPPED");
    assert.equal((await stack.ctr(["t", "rm", "img-d"])).code, 0);
    const rm = await stack.ctr(["c", "rm", "img-d"]);
    assert.equal(rm.code, 0, rm.stderr);
    const snaps = await stack.ctr(["snapshots", "ls"]);
    assert.doesNotMatch(snaps.stdout, /img-d/);
  });
});
