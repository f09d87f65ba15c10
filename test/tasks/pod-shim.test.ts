/**
 * Pod members in one shim (containerd's runc v2 shim grouping): containers run by the real `ctr` with
 * `--label io.containerd.runc.v2.group=G` (ctr puts the label in the spec's annotations too) share
 * one Flotilla shim process, as do containers whose record names a sandbox; a standalone container
 * keeps its own. Each member is exec'd into, killed and deleted on its own; the shim outlives every
 * member but the last; a restart of the tasks process recovers all members, and a new member joins
 * the recovered shim. Prints the shim's PSS per extra member (/proc/PID/smaps_rollup).
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { background } from "#libs/context";
import { ContainerStoreProxy } from "#libs/clients/containers";
import { TaskServiceProxy } from "#libs/clients/tasks";
import { OCI_SPEC_TYPE_URL } from "#libs/core/containers";
import { TaskStatus } from "#libs/core/tasks";
import { startStack, testChannels, waitFor, type Stack } from "../harness";
import { alive, rootfsArgs, waitTaskStatus, withStackAndEvents } from "./helpers";

const GROUP = "io.containerd.runc.v2.group";

/** The init pids `ctr task ls` shows, by task id. */
async function taskPids(stack: Stack, ns = "default"): Promise<Map<string, number>> {
  const r = await stack.ctr(["t", "ls"], { namespace: ns });
  assert.equal(r.code, 0, r.stderr);
  const out = new Map<string, number>();
  for (const l of r.stdout.split("\n").slice(1)) {
    const [id, pid] = l.split(/\s+/);
    if (id && pid) out.set(id, Number(pid));
  }
  return out;
}

/** The shim of a container: the subreaper its init was re-parented to. */
function parentOf(pid: number): number {
  const m = /^PPid:\s+(\d+)$/m.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"));
  return Number(m?.[1] ?? 0);
}

/** The child processes of `pid` (a shim's containers are re-parented to it). */
function childrenOf(pid: number): number[] {
  try {
    return fs.readdirSync(`/proc/${pid}/task`).flatMap((t) => fs.readFileSync(`/proc/${pid}/task/${t}/children`, "utf8").split(" ").filter(Boolean).map(Number));
  } catch {
    return [];
  }
}

/** A process's proportional set size in KiB. */
function pssKiB(pid: number): number {
  const m = /^Pss:\s+(\d+) kB$/m.exec(fs.readFileSync(`/proc/${pid}/smaps_rollup`, "utf8"));
  return Number(m?.[1] ?? 0);
}

describe("tasks - pod members share one shim", () => {
  const s = withStackAndEvents(() => startStack());
  const run = async (id: string, group: string | undefined, cmd: string[], flags: string[] = []): Promise<void> => {
    const r = await s.stack.ctr(["run", "-d", ...flags, ...(group ? ["--label", `${GROUP}=${group}`] : []), ...rootfsArgs(s.rootfs), id, ...cmd]);
    assert.equal(r.code, 0, r.stderr);
  };
  const exec = async (id: string, execId: string): Promise<void> => {
    const r = await s.stack.ctr(["t", "exec", "--exec-id", execId, id, "sh", "-c", `echo in-${id}; exit 7`]);
    assert.equal(r.code, 7, r.stderr);
    assert.equal(r.stdout, `in-${id}\n`);
  };
  /** Wait for the task's exit with `exitStatus`, then delete task and container. */
  const reap = async (id: string, exitStatus: number): Promise<void> => {
    await s.events.waitFor(`${id} exit`, (l) => l.some((e) => e.topic === "/tasks/exit" && e.json.container_id === id && e.json.id === id && e.json.exit_status === exitStatus));
    const rm = await s.stack.ctr(["t", "rm", id]);
    assert.equal(rm.code, 0, rm.stderr);
    assert.equal((await s.stack.ctr(["c", "rm", id])).code, 0);
  };
  const remove = async (id: string, exitStatus: number, signal?: string): Promise<void> => {
    assert.equal((await s.stack.ctr(["t", "kill", ...(signal ? ["-s", signal] : []), id])).code, 0);
    await reap(id, exitStatus);
  };

  test("ctr run --label io.containerd.runc.v2.group: one shim for the group's members, exec/kill/delete each, recovered after a tasks restart", async () => {
    const { stack, rootfs, events } = s;
    await run("m1", "pod-a", ["sh", "-c", "trap 'exit 42' TERM; while true; do sleep 0.1; done"]);
    await run("solo", undefined, ["sleep", "1000"]);
    await waitTaskStatus(stack, "m1", "RUNNING");
    let pids = await taskPids(stack);
    const shim = parentOf(pids.get("m1")!);
    assert.ok(shim > 0 && alive(shim));
    const one = pssKiB(shim);
    await run("m2", "pod-a", ["sleep", "1000"]);
    await run("m3", "pod-a", ["sh", "-c", "trap 'exit 43' TERM; while true; do sleep 0.1; done"]);
    await waitTaskStatus(stack, "m3", "RUNNING");
    pids = await taskPids(stack);
    assert.deepEqual(["m1", "m2", "m3"].map((id) => parentOf(pids.get(id)!)), [shim, shim, shim], "the group's members share one shim");
    assert.notEqual(parentOf(pids.get("solo")!), shim, "a standalone container keeps its own shim");
    const three = pssKiB(shim);
    process.stdout.write(`# shim PSS: ${one} KiB with one member, ${three} KiB with three: ${((three - one) / 2 / 1024).toFixed(2)} MiB per extra member\n`);

    for (const id of ["m1", "m2", "m3"]) await exec(id, `x-${id}`);
    // One member killed and deleted: the shim serves the others.
    await remove("m2", 137, "KILL");
    assert.ok(alive(shim), "the shim outlives a deleted member");
    await exec("m1", "after-m2");
    // A member's OOM kill is its own (its cgroup, its /tasks/oom); the others run on.
    await run("oomm", "pod-a", ["sh", "-c", "sleep 1; x=xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx; while true; do x=$x$x; done"], ["--memory-limit", String(16 << 20)]);
    assert.equal(parentOf((await taskPids(stack)).get("oomm")!), shim, "the OOM member runs in the group's shim");
    await reap("oomm", 137);
    assert.ok(events.forContainer("oomm").some((e) => e.topic === "/tasks/oom"), "the member's OOM is reported");
    assert.deepEqual(events.lines.filter((e) => e.topic === "/tasks/oom" && e.json.container_id !== "oomm"), [], "no other member's");
    await waitTaskStatus(stack, "m1", "RUNNING");

    const old = stack.kill("tasks", "SIGKILL");
    await stack.waitRestarted("tasks", old);
    const recovered = await taskPids(stack);
    for (const id of ["m1", "m3", "solo"]) assert.equal(recovered.get(id), pids.get(id), `${id} is recovered with its pid`);
    assert.equal(recovered.has("m2"), false);
    await waitTaskStatus(stack, "m3", "RUNNING");
    await exec("m3", "after-restart");
    // A new member joins the recovered shim.
    await run("m4", "pod-a", ["sleep", "1000"]);
    await waitTaskStatus(stack, "m4", "RUNNING");
    assert.equal(parentOf((await taskPids(stack)).get("m4")!), shim, "a member created after the restart joins the group's shim");

    // The shim logs into its newest member's bundle; once that member is gone, into the newest remaining one's.
    assert.match(fs.readlinkSync(`/proc/${shim}/cwd`), /\/m4$/);
    await remove("m4", 137, "KILL");
    assert.match(fs.readlinkSync(`/proc/${shim}/cwd`), /\/m3$/);
    await remove("m1", 42);
    await waitFor("the shim's log of m1's delete, through m3's log FIFO", () => (stack.logs().split("\n").some((l) => l.includes('"msg":"deleted"') && l.includes('"id":"m1"')) ? true : undefined), 10000, 100);
    assert.ok(alive(shim), "the shim serves its last member");
    await remove("m3", 43);
    await waitFor("the group's shim to exit after its last member", () => (alive(shim) ? undefined : true), 10000, 100);
    await remove("solo", 137, "KILL");
    // Every member's events came out of the shared shim, in order.
    for (const id of ["m1", "m3"]) {
      assert.deepEqual(events.forContainer(id).filter((e) => e.topic.startsWith("/tasks/") && !e.topic.startsWith("/tasks/exec") && (e.topic !== "/tasks/exit" || e.json.id === id)).map((e) => e.topic), ["/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"], id);
    }
  });

  test("containers whose record names a sandbox (no annotation or label) share one shim", async () => {
    const { stack, rootfs } = s;
    const ctx = background("podshim");
    const containers = new ContainerStoreProxy(testChannels.get(stack.socket));
    const tasks = new TaskServiceProxy(testChannels.get(stack.socket));
    const spec = (id: string): Buffer => Buffer.from(JSON.stringify({
      ociVersion: "1.0.2-dev",
      process: { user: { uid: 0, gid: 0 }, args: ["sleep", "1000"], env: ["PATH=/bin"], cwd: "/" },
      root: { path: rootfs },
      hostname: id,
      mounts: [{ destination: "/proc", type: "proc", source: "proc", options: ["nosuid", "noexec", "nodev"] }],
      linux: { cgroupsPath: `/podshim/${id}`, namespaces: [{ type: "pid" }, { type: "ipc" }, { type: "uts" }, { type: "mount" }] },
    }));
    const ids = ["sb1", "sb2", "other"];
    for (const id of ids) {
      await containers.create(ctx, { id, runtime: { name: "io.containerd.runc.v2" }, spec: { typeUrl: OCI_SPEC_TYPE_URL, value: spec(id) }, ...(id === "other" ? {} : { sandbox: "pod-b" }) });
      await tasks.create(ctx, { containerId: id, rootfs: [], io: { stdin: "", stdout: "", stderr: "", terminal: false } });
      await tasks.start(ctx, id);
    }
    const shims = await Promise.all(ids.map(async (id) => parentOf((await tasks.get(ctx, id)).pid)));
    assert.equal(shims[0], shims[1], "the sandbox's members share a shim");
    assert.notEqual(shims[0], shims[2], "a container without a sandbox has its own");
    for (const id of ids) {
      await tasks.kill(ctx, id, 9);
      assert.equal((await tasks.wait(ctx, id)).exitStatus, 137);
      if (id === "sb1") assert.equal((await tasks.get(ctx, "sb2")).status, TaskStatus.Running, "the other member runs on");
      await tasks.delete(ctx, id);
      await containers.delete(ctx, id);
    }
    // The pod's shim came from the warm pool: with its last member gone it exits or goes back there, serving nothing.
    await waitFor("the sandbox's shim to serve nothing", () => (!alive(shims[0]!) || childrenOf(shims[0]!).length === 0 ? true : undefined), 10000, 100);
    await waitFor("the members' bundles to be removed", () => (fs.readdirSync(path.join(stack.state, "tasks", "io.containerd.runtime.v2.task", "podshim")).length === 0 ? true : undefined), 10000, 100);
  });
});
