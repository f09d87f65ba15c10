/**
 * Restart recovery: kill -9 the tasks process while containers run. After the supervisor restarts
 * it, the shims are reconnected: `ctr task ls` shows the tasks, and kill, wait (attach), exec and exit
 * events work. A shim that died while the tasks process was down is cleaned up with /tasks/exit and
 * /tasks/delete, as containerd does.
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { startStack } from "../harness";
import { alive, rootfsArgs, runcContainers, taskShimPid, waitTaskStatus, withStackAndEvents } from "./helpers";

function pidOfTask(ls: string, id: string): number {
  const row = ls.split("\n").find((l) => l.split(/\s+/)[0] === id);
  return row ? Number(row.split(/\s+/)[1]) : 0;
}

describe("tasks - restart recovery", () => {
  const s = withStackAndEvents(() => startStack());

  test("kill -9 the tasks process: tasks listed again; kill, wait, exec and exit events still work", async () => {
    const { stack, rootfs, events } = s;
    assert.equal((await stack.ctr(["run", "-d", ...rootfsArgs(rootfs), "r1", "sh", "-c", "trap 'exit 42' TERM; while true; do sleep 0.1; done"])).code, 0);
    assert.equal((await stack.ctr(["run", "-d", ...rootfsArgs(rootfs), "r2", "sleep", "1000"])).code, 0);
    await waitTaskStatus(stack, "r1", "RUNNING");
    await waitTaskStatus(stack, "r2", "RUNNING");
    const before = (await stack.ctr(["t", "ls"])).stdout;
    const shimsBefore = ["r1", "r2"].map((id) => taskShimPid(stack, id));
    assert.ok(shimsBefore.every(Boolean), "each task has its shim");

    const old = stack.kill("tasks", "SIGKILL");
    await stack.waitRestarted("tasks", old);

    const ls = await stack.ctr(["t", "ls"]);
    assert.equal(ls.code, 0, ls.stderr);
    for (const id of ["r1", "r2"]) {
      assert.equal(pidOfTask(ls.stdout, id), pidOfTask(before, id), `${id} keeps its pid`);
      assert.match(ls.stdout, new RegExp(`^${id}\\s+\\d+\\s+RUNNING`, "m"));
    }
    assert.deepEqual(["r1", "r2"].map((id) => taskShimPid(stack, id)), shimsBefore, "the same shims serve the tasks");

    const ex = await stack.ctr(["t", "exec", "--exec-id", "after", "r2", "sh", "-c", "echo still-here; exit 3"]);
    assert.equal(ex.code, 3, ex.stderr);
    assert.equal(ex.stdout, "still-here\n");

    const attach = stack.ctr(["t", "attach", "r1"]);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal((await stack.ctr(["t", "kill", "r1"])).code, 0);
    const a = await attach;
    assert.equal(a.code, 42, a.stderr);
    await events.waitFor("r1 exit after restart", (l) => l.some((e) => e.topic === "/tasks/exit" && e.json.container_id === "r1" && e.json.exit_status === 42));
    // attach deletes the task once it has exited, as ctr does.
    assert.doesNotMatch((await stack.ctr(["t", "ls", "-q"])).stdout, /^r1$/m);
    assert.equal((await stack.ctr(["c", "rm", "r1"])).code, 0);

    assert.equal((await stack.ctr(["t", "rm", "-f", "r2"])).code, 0);
    await events.waitFor("r2 delete", (l) => l.some((e) => e.topic === "/tasks/delete" && e.json.container_id === "r2"));
    assert.equal((await stack.ctr(["c", "rm", "r2"])).code, 0);
  });

  test("a shim that died while the tasks process was down: /tasks/exit and /tasks/delete, bundle removed", async () => {
    const { stack, rootfs, events } = s;
    assert.equal((await stack.ctr(["run", "-d", ...rootfsArgs(rootfs), "gone1", "sleep", "1000"])).code, 0);
    await waitTaskStatus(stack, "gone1", "RUNNING");
    const taskPid = pidOfTask((await stack.ctr(["t", "ls"])).stdout, "gone1");
    const shim = taskShimPid(stack, "gone1");
    assert.ok(shim);

    const old = stack.kill("tasks", "SIGKILL");
    process.kill(shim, "SIGKILL");
    await stack.waitRestarted("tasks", old);

    await events.waitFor("gone1 cleaned up", (l) => l.some((e) => e.topic === "/tasks/delete" && e.json.container_id === "gone1"));
    const topics = events.forContainer("gone1").map((e) => e.topic);
    assert.deepEqual(topics.slice(-2), ["/tasks/exit", "/tasks/delete"]);
    const exit = events.forContainer("gone1").find((e) => e.topic === "/tasks/exit")!;
    assert.equal(exit.json.exit_status, 137);
    assert.equal(exit.json.pid, taskPid);
    const ls = await stack.ctr(["t", "ls", "-q"]);
    assert.doesNotMatch(ls.stdout, /gone1/);
    assert.ok(!fs.existsSync(path.join(stack.state, "tasks", "io.containerd.runtime.v2.task", "default", "gone1")));
    assert.deepEqual(runcContainers(path.join(stack.state, "tasks", "runc")).filter((c) => c.id === "gone1"), []);
    assert.ok(!alive(taskPid), "the container's process is gone");
    assert.equal((await stack.ctr(["c", "rm", "gone1"])).code, 0);
  });
});
