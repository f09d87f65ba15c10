/**
 * The configuration maps a runtime name to an external shim binary, and Debian's
 * containerd-shim-runc-v2 (containerd 1.6) runs containers through the same runtime v2 path as
 * Flotilla's own shim: start subcommand, bundle, log FIFO, ttrpc task API v2, events over TTRPC_ADDRESS.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { startStack, type Stack } from "../harness";
import { busyboxRootfs, EventsWatcher, rootfsArgs, shimPids, stopStackAndCleanup, waitTaskStatus } from "./helpers";

const DEBIAN_SHIM = "/usr/bin/containerd-shim-runc-v2";
const RUNTIME = "io.containerd.debian.v2";

describe("tasks - an external shim (Debian's containerd-shim-runc-v2)", () => {
  let stack: Stack;
  let rootfs: string;
  let events: EventsWatcher;
  const ns = `fltdeb${process.pid}`;
  const ctr = (args: string[]): ReturnType<Stack["ctr"]> => stack.ctr(args, { namespace: ns });

  before(async () => {
    assert.ok(fs.existsSync(DEBIAN_SHIM), `${DEBIAN_SHIM} is installed (Debian package containerd)`);
    stack = await startStack({ extraToml: `[plugins."io.containerd.runtime.v2.task".runtimes."${RUNTIME}"]\nshim = "${DEBIAN_SHIM}"\n` });
    rootfs = busyboxRootfs(path.join(stack.dir, "rootfs"));
    events = new EventsWatcher(stack, [`namespace==${ns}`]);
    await events.ready();
  });

  after(async () => {
    events?.stop();
    // Debian's shim keeps runc state under /run/containerd/runc/<namespace>.
    await stopStackAndCleanup(stack, [{ root: "/run/containerd/runc", ids: ["deb1", "deb2", "deb3"] }]);
    fs.rmSync(path.join("/run/containerd/runc", ns), { recursive: true, force: true });
  });

  test("run --rm through the external shim: output and exit code", async () => {
    const r = await ctr(["run", "--rm", "--runtime", RUNTIME, ...rootfsArgs(rootfs), "deb1", "sh", "-c", "echo via-debian; echo e >&2; exit 3"]);
    assert.equal(r.code, 3, r.stderr);
    assert.equal(r.stdout, "via-debian\n");
    assert.equal(r.stderr, "e\n");
    await events.waitFor("deb1 deleted", (l) => l.some((e) => e.topic === "/containers/delete" && e.json.id === "deb1"));
    assert.deepEqual(events.forContainer("deb1").map((e) => e.topic), ["/containers/create", "/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete", "/containers/delete"]);
  });

  test("run -d, the shim process is Debian's, exec, ps, pause/resume, metrics, kill", async () => {
    assert.equal((await ctr(["run", "-d", "--runtime", RUNTIME, ...rootfsArgs(rootfs), "deb2", "sleep", "1000"])).code, 0);
    await waitTaskStatus(stack, "deb2", "RUNNING", ns);
    const shims = shimPids(stack).map((p) => fs.readFileSync(`/proc/${p}/cmdline`, "utf8").split("\0"));
    assert.ok(shims.some((c) => c[0] === DEBIAN_SHIM && c.includes("deb2")), JSON.stringify(shims));
    const bundle = path.join(stack.state, "tasks", "io.containerd.runtime.v2.task", ns, "deb2");
    assert.equal(fs.readFileSync(path.join(bundle, "shim-binary-path"), "utf8"), DEBIAN_SHIM);
    assert.match(fs.readFileSync(path.join(bundle, "address"), "utf8"), /^unix:\/\/\/run\/containerd\/s\/[0-9a-f]{64}$/);

    const ex = await ctr(["t", "exec", "--exec-id", "x", "deb2", "sh", "-c", "echo exec-ok; exit 4"]);
    assert.equal(ex.code, 4, ex.stderr);
    assert.equal(ex.stdout, "exec-ok\n");
    const ps = await ctr(["t", "ps", "deb2"]);
    assert.equal(ps.code, 0, ps.stderr);
    assert.ok(ps.stdout.trim().split("\n").length >= 2);
    assert.equal((await ctr(["t", "pause", "deb2"])).code, 0);
    await waitTaskStatus(stack, "deb2", "PAUSED", ns);
    assert.equal((await ctr(["t", "resume", "deb2"])).code, 0);
    const m = await ctr(["t", "metrics", "deb2"]);
    assert.equal(m.code, 0, m.stderr);
    assert.match(m.stdout, /deb2/);
    assert.equal((await ctr(["t", "kill", "-s", "SIGKILL", "deb2"])).code, 0);
    await events.waitFor("deb2 exit", (l) => l.some((e) => e.topic === "/tasks/exit" && e.json.container_id === "deb2" && e.json.exit_status === 137));
    assert.equal((await ctr(["t", "rm", "deb2"])).code, 0);
    assert.equal((await ctr(["c", "rm", "deb2"])).code, 0);
    const topics = events.forContainer("deb2").map((e) => e.topic);
    for (const t of ["/tasks/exec-added", "/tasks/exec-started", "/tasks/paused", "/tasks/resumed", "/tasks/delete"]) assert.ok(topics.includes(t), `${t} in ${topics.join(",")}`);
    assert.ok(!fs.existsSync(bundle), "bundle removed");
  });

  test("the same container runs under Flotilla's shim when no runtime is named", async () => {
    const r = await ctr(["run", "--rm", ...rootfsArgs(rootfs), "deb3", "sh", "-c", "exit 5"]);
    assert.equal(r.code, 5, r.stderr);
  });
});
