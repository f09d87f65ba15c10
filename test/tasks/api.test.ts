/**
 * The Tasks and Containers APIs through the gateway with the proxies (no ctr): Wait before Start,
 * exit statuses from Wait and Delete, Get's fields as containerd fills them, exec ids, kill --all,
 * ListPids details, metrics types, Update, crun as the OCI runtime, and containerd's errors.
 * This stack sets warm_shims = 0, so every shim here goes through the `start` subcommand. It also maps
 * a runtime name to Debian's containerd-shim-runc-v2 (containerd 1.6), which runs containers through
 * the same runtime v2 path: start subcommand, bundle, log FIFO, task API v2, events over TTRPC_ADDRESS.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { background } from "#libs/context";
import { ErrorCodes } from "#libs/errdefs";
import { encode, decode } from "#libs/proto";
import { ContainerStoreProxy } from "#libs/clients/containers";
import { ContentStoreProxy } from "#libs/clients/content";
import { TaskServiceProxy } from "#libs/clients/tasks";
import { OCI_PROCESS_TYPE_URL, OCI_SPEC_TYPE_URL } from "#libs/core/containers";
import { TaskStatus } from "#libs/core/tasks";
import { mkfifo } from "#libs/sys/linux";
import { startStack, type Stack, testChannels } from "../harness";
import { busyboxRootfs, code, EventsWatcher, rootfsArgs, shimPids, stopStackAndCleanup, waitTaskStatus } from "./helpers";

const ctx = background("api");
const DEBIAN_SHIM = "/usr/bin/containerd-shim-runc-v2";
const DEBIAN_RUNTIME = "io.containerd.debian.v2";

function spec(rootfs: string, id: string, args: string[], extra: Record<string, unknown> = {}): Buffer {
  return Buffer.from(JSON.stringify({
    ociVersion: "1.0.2-dev",
    process: { user: { uid: 0, gid: 0 }, args, env: ["PATH=/bin"], cwd: "/", noNewPrivileges: true },
    root: { path: rootfs },
    hostname: id,
    mounts: [
      { destination: "/proc", type: "proc", source: "proc", options: ["nosuid", "noexec", "nodev"] },
      { destination: "/dev", type: "tmpfs", source: "tmpfs", options: ["nosuid", "strictatime", "mode=755", "size=65536k"] },
    ],
    linux: { cgroupsPath: `/api/${id}`, namespaces: [{ type: "pid" }, { type: "ipc" }, { type: "uts" }, { type: "mount" }, { type: "network" }] },
    ...extra,
  }));
}

describe("tasks - the APIs through the gateway (shims started with `shim start`)", () => {
  let stack: Stack;
  let rootfs: string;
  let containers: ContainerStoreProxy;
  let tasks: TaskServiceProxy;
  let fifoDir: string;
  let seq = 0;
  let events: EventsWatcher;
  const debNs = `fltdeb${process.pid}`;
  const dctr = (args: string[]): ReturnType<Stack["ctr"]> => stack.ctr(args, { namespace: debNs });
  const io = (): { stdin: string; stdout: string; stderr: string; terminal: boolean } => {
    const d = path.join(fifoDir, String(++seq));
    fs.mkdirSync(d);
    for (const n of ["stdin", "stdout", "stderr"]) mkfifo(path.join(d, n));
    return { stdin: path.join(d, "stdin"), stdout: path.join(d, "stdout"), stderr: path.join(d, "stderr"), terminal: false };
  };
  const make = async (id: string, args: string[], runtime = "io.containerd.runc.v2", options?: { typeUrl: string; value: Uint8Array }): Promise<void> => {
    await containers.create(ctx, { id, runtime: { name: runtime, ...(options ? { options } : {}) }, spec: { typeUrl: OCI_SPEC_TYPE_URL, value: spec(rootfs, id, args) } });
  };

  before(async () => {
    // crun refuses this host's hybrid cgroup layout unless told not to manage cgroups.
    stack = await startStack({
      extraToml: [
        '[plugins."io.containerd.runtime.v2.task"]',
        "warm_shims = 0",
        '[plugins."io.containerd.runtime.v2.task".runtimes."io.containerd.crun.v2"]',
        'shim = "flotilla"',
        'runtime_binary = "crun"',
        'runtime_args = ["--cgroup-manager=disabled"]',
        `[plugins."io.containerd.runtime.v2.task".runtimes."${DEBIAN_RUNTIME}"]`,
        `shim = "${DEBIAN_SHIM}"`,
      ].join("\n"),
    });
    rootfs = busyboxRootfs(path.join(stack.dir, "rootfs"));
    fifoDir = path.join(stack.dir, "fifo");
    fs.mkdirSync(fifoDir);
    containers = new ContainerStoreProxy(testChannels.get(stack.socket));
    tasks = new TaskServiceProxy(testChannels.get(stack.socket));
    assert.ok(fs.existsSync(DEBIAN_SHIM), `${DEBIAN_SHIM} is installed (Debian package containerd)`);
    events = new EventsWatcher(stack, [`namespace==${debNs}`]);
    await events.ready();
  });

  after(async () => {
    testChannels.close();
    events?.stop();
    // Debian's shim keeps runc state under /run/containerd/runc/<namespace>.
    await stopStackAndCleanup(stack, [{ root: "/run/containerd/runc", ids: ["deb1", "deb2", "deb3"] }]);
    fs.rmSync(path.join("/run/containerd/runc", debNs), { recursive: true, force: true });
    // runc removes each container's cgroup, not the namespace's parent: drop it if empty.
    for (const h of fs.readdirSync("/sys/fs/cgroup")) {
      try {
        fs.rmdirSync(path.join("/sys/fs/cgroup", h, debNs));
      } catch {
        /* absent or busy */
      }
    }
  });

  test("Wait before Start blocks until the exit; Delete returns the exit status; Get's fields", async () => {
    await make("w1", ["sh", "-c", "sleep 0.2; exit 17"]);
    const stdio = { stdin: "", stdout: "", stderr: "", terminal: false };
    const pid = await tasks.create(ctx, { containerId: "w1", rootfs: [], io: stdio });
    assert.ok(pid > 0);
    const created = await tasks.get(ctx, "w1");
    assert.equal(created.status, TaskStatus.Created);
    assert.equal(created.id, "w1");
    assert.equal(created.pid, pid);
    const waited = tasks.wait(ctx, "w1");
    let done = false;
    void waited.then(() => (done = true));
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(done, false, "Wait blocks while the task has not started");
    assert.equal(await tasks.start(ctx, "w1"), pid);
    const exit = await waited;
    assert.equal(exit.exitStatus, 17);
    assert.ok(exit.exitedAt.getTime() > Date.now() - 60_000);
    const stopped = await tasks.get(ctx, "w1");
    assert.equal(stopped.status, TaskStatus.Stopped);
    assert.equal(stopped.exitStatus, 17);
    assert.equal(await code(tasks.start(ctx, "w1")), ErrorCodes.FailedPrecondition);
    const del = await tasks.delete(ctx, "w1");
    assert.deepEqual([del.pid, del.exitStatus], [pid, 17]);
    assert.equal(await code(tasks.get(ctx, "w1")), ErrorCodes.NotFound);
    assert.equal(await code(tasks.delete(ctx, "w1")), ErrorCodes.NotFound);
    await containers.delete(ctx, "w1");
  });

  test("stdio paths are returned exactly as given; exec ids validated and unique; ListPids details; kill --all", async () => {
    await make("x1", ["sleep", "1000"]);
    const stdio = io();
    const pid = await tasks.create(ctx, { containerId: "x1", rootfs: [], io: stdio });
    await tasks.start(ctx, "x1");
    const got = await tasks.get(ctx, "x1");
    assert.deepEqual([got.stdin, got.stdout, got.stderr, got.terminal], [stdio.stdin, stdio.stdout, stdio.stderr, false]);
    const proc = { typeUrl: OCI_PROCESS_TYPE_URL, value: Buffer.from(JSON.stringify({ args: ["sleep", "1000"], env: ["PATH=/bin"], cwd: "/", user: { uid: 0, gid: 0 } })) };
    assert.equal(await code(tasks.exec(ctx, "x1", "", io(), proc)), ErrorCodes.InvalidArgument);
    assert.equal(await code(tasks.exec(ctx, "x1", "bad id!", io(), proc)), ErrorCodes.InvalidArgument);
    await tasks.exec(ctx, "x1", "sleeper", { stdin: "", stdout: "", stderr: "", terminal: false }, proc);
    assert.equal(await code(tasks.exec(ctx, "x1", "sleeper", { stdin: "", stdout: "", stderr: "", terminal: false }, proc)), ErrorCodes.AlreadyExists);
    const execPid = await tasks.start(ctx, "x1", "sleeper");
    const e = await tasks.get(ctx, "x1", "sleeper");
    assert.deepEqual([e.id, e.pid, e.status], ["sleeper", execPid, TaskStatus.Running]);
    const pids = await tasks.listPids(ctx, "x1");
    assert.deepEqual(pids.map((p) => p.pid).sort(), [pid, execPid].sort());
    const info = pids.find((p) => p.pid === execPid)!.info!;
    assert.equal(info.typeUrl, "containerd.runc.v1.ProcessDetails");
    assert.deepEqual(decode("containerd.runc.v1.ProcessDetails", info.value), { exec_id: "sleeper" });
    assert.equal(pids.find((p) => p.pid === pid)!.info, undefined);
    assert.equal(await code(tasks.get(ctx, "x1", "nope")), ErrorCodes.NotFound);

    const execWait = tasks.wait(ctx, "x1", "sleeper");
    await tasks.kill(ctx, "x1", 9, { all: true });
    assert.equal((await tasks.wait(ctx, "x1")).exitStatus, 137);
    assert.equal((await execWait).exitStatus, 137);
    assert.equal(await code(tasks.kill(ctx, "x1", 15)), ErrorCodes.NotFound, "killing a finished process");
    const d = await tasks.deleteProcess(ctx, "x1", "sleeper");
    assert.equal(d.exitStatus, 137);
    await tasks.delete(ctx, "x1");
    await containers.delete(ctx, "x1");
  });

  test("Metrics: cgroups v1 type on this host, filtered by id; Update resources; Pause/Resume states", async () => {
    await make("m1", ["sleep", "1000"]);
    await tasks.create(ctx, { containerId: "m1", rootfs: [], io: { stdin: "", stdout: "", stderr: "", terminal: false } });
    await tasks.start(ctx, "m1");
    const ms = await tasks.metrics(ctx, ["id==m1"]);
    assert.equal(ms.length, 1);
    assert.equal(ms[0]!.data!.typeUrl, "io.containerd.cgroups.v1.Metrics");
    const m = decode<{ memory: { usage: { usage: number } }; pids: { current: number }; cpu: { usage: { total: number } } }>("io.containerd.cgroups.v1.Metrics", ms[0]!.data!.value);
    assert.ok(m.memory.usage.usage > 0);
    assert.ok(m.pids.current >= 1);
    assert.deepEqual(await tasks.metrics(ctx, ["id==none"]), []);
    await tasks.update(ctx, "m1", { typeUrl: "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources", value: Buffer.from(JSON.stringify({ pids: { limit: 33 } })) });
    const after2 = decode<{ pids: { limit: number } }>("io.containerd.cgroups.v1.Metrics", (await tasks.metrics(ctx, ["id==m1"]))[0]!.data!.value);
    assert.equal(after2.pids.limit, 33);
    await tasks.pause(ctx, "m1");
    assert.equal((await tasks.get(ctx, "m1")).status, TaskStatus.Paused);
    assert.equal(await code(tasks.pause(ctx, "m1")), ErrorCodes.FailedPrecondition);
    await tasks.resume(ctx, "m1");
    assert.equal((await tasks.get(ctx, "m1")).status, TaskStatus.Running);
    assert.equal(await code(tasks.delete(ctx, "m1")), ErrorCodes.FailedPrecondition, "a running task is not deleted");
    await tasks.kill(ctx, "m1", 9);
    await tasks.wait(ctx, "m1");
    await tasks.delete(ctx, "m1");
    await containers.delete(ctx, "m1");
  });

  test("crun as the OCI runtime: by runtime options (binary_name) and by a configured runtime", async () => {
    // crun 1.8 refuses hybrid cgroup hosts (this one: v1 controllers plus hugetlb on cgroup2) whatever
    // its options; where it runs, the task must exit with its status. Either way crun did the work.
    const runWith = async (id: string, runtime: string, status: number, options?: { typeUrl: string; value: Uint8Array }): Promise<void> => {
      await make(id, ["sh", "-c", `exit ${status}`], runtime, options);
      const bundle = path.join(stack.state, "tasks", "io.containerd.runtime.v2.task", "api", id);
      const err = await tasks.create(ctx, { containerId: id, rootfs: [], io: { stdin: "", stdout: "", stderr: "", terminal: false } }).then(() => "", (e: Error) => e.message);
      if (err) {
        assert.match(err, /^failed to create shim task: OCI runtime create failed: cgroups in hybrid mode not supported/, err);
        assert.ok(!fs.existsSync(bundle), "bundle removed after the failure");
      } else {
        assert.equal(fs.readFileSync(path.join(bundle, "runtime"), "utf8"), "crun");
        const w = tasks.wait(ctx, id);
        await tasks.start(ctx, id);
        assert.equal((await w).exitStatus, status);
        assert.equal((await tasks.delete(ctx, id)).exitStatus, status);
      }
      await containers.delete(ctx, id);
    };
    await runWith("cr1", "io.containerd.runc.v2", 3, { typeUrl: "containerd.runc.v1.Options", value: encode("containerd.runc.v1.Options", { binary_name: "crun" }) });
    await runWith("cr2", "io.containerd.crun.v2", 4);
  });

  test("Checkpoint: CRIU dump to the content store (or CRIU's own error where CRIU cannot run), nothing left behind", async () => {
    await make("cp1", ["sleep", "1000"]);
    await tasks.create(ctx, { containerId: "cp1", rootfs: [], io: { stdin: "", stdout: "", stderr: "", terminal: false } });
    await tasks.start(ctx, "cp1");
    const res = await tasks.checkpoint(ctx, "cp1", {}).then((d) => d, (e: Error) => e);
    if (res instanceof Error) {
      // CRIU fails on this kernel (vdso); the error is CRIU's, passed through runc and the shim.
      assert.match(res.message, /OCI runtime checkpoint failed: .*criu/i, res.message);
    } else {
      assert.deepEqual(res.map((d) => d.mediaType), ["application/vnd.containerd.container.criu.checkpoint.criu.tar", "application/vnd.containerd.container.checkpoint.config.v1+proto"]);
      const content = new ContentStoreProxy(testChannels.get(stack.socket));
      for (const d of res) assert.equal((await content.info(ctx, d.digest)).size, d.size);
    }
    const dumps = path.join(stack.state, "tasks", "checkpoints");
    assert.deepEqual(fs.existsSync(dumps) ? fs.readdirSync(dumps) : [], [], "the dump directory is removed");
    assert.equal((await tasks.get(ctx, "cp1")).status, TaskStatus.Running, "the task keeps running");
    await tasks.kill(ctx, "cp1", 9);
    await tasks.wait(ctx, "cp1");
    await tasks.delete(ctx, "cp1");
    await containers.delete(ctx, "cp1");
  });

  test("shim groups: specs with the same group annotation share one shim; when it dies, all its tasks are cleaned up", async () => {
    const grouped = (id: string, group: string): Buffer => spec(rootfs, id, ["sleep", "1000"], { annotations: { "io.containerd.runc.v2.group": group } });
    for (const [id, g] of [["g1", "pod1"], ["g2", "pod1"], ["g3", "pod2"]]) {
      await containers.create(ctx, { id: id!, runtime: { name: "io.containerd.runc.v2" }, spec: { typeUrl: OCI_SPEC_TYPE_URL, value: grouped(id!, g!) } });
      await tasks.create(ctx, { containerId: id!, rootfs: [], io: { stdin: "", stdout: "", stderr: "", terminal: false } });
      await tasks.start(ctx, id!);
    }
    const addr = (id: string): string => fs.readFileSync(path.join(stack.state, "tasks", "io.containerd.runtime.v2.task", "api", id, "address"), "utf8");
    assert.equal(addr("g1"), addr("g2"));
    assert.notEqual(addr("g1"), addr("g3"));
    const sock = addr("g1").replace("unix://", "");
    const shim = shimPids(stack).find((p) => fs.readFileSync(`/proc/${p}/cmdline`, "utf8").includes("-id\0g1\0"));
    assert.ok(shim, "the pod1 shim runs");
    // Deleting one task of the group keeps the shim for the other.
    await tasks.kill(ctx, "g2", 9);
    assert.equal((await tasks.wait(ctx, "g2")).exitStatus, 137);
    await tasks.delete(ctx, "g2");
    assert.ok(fs.existsSync(sock), "the shim still serves g1");
    assert.equal((await tasks.get(ctx, "g1")).status, TaskStatus.Running);
    // The shim dies: g1 is cleaned up (exit 137 from `shim delete`), g3 is untouched.
    const w = tasks.wait(ctx, "g1");
    process.kill(shim, "SIGKILL");
    assert.equal((await w).exitStatus, 137, "Wait cut off by the dead shim answers with the cleanup's exit");
    for (let i = 0; i < 50 && (await code(tasks.get(ctx, "g1"))) !== ErrorCodes.NotFound; i++) await new Promise((r) => setTimeout(r, 100));
    assert.equal(await code(tasks.get(ctx, "g1")), ErrorCodes.NotFound);
    assert.equal((await tasks.get(ctx, "g3")).status, TaskStatus.Running);
    await tasks.kill(ctx, "g3", 9);
    await tasks.wait(ctx, "g3");
    await tasks.delete(ctx, "g3");
    for (const id of ["g1", "g2", "g3"]) await containers.delete(ctx, id);
  });

  test("containerd's errors: no container, no task, a second task, unknown runtime, no namespace", async () => {
    assert.equal(await code(tasks.create(ctx, { containerId: "ghost", rootfs: [], io: { stdin: "", stdout: "", stderr: "", terminal: false } })), ErrorCodes.NotFound);
    await make("e1", ["sleep", "1000"]);
    assert.equal(await code(tasks.get(ctx, "e1")), ErrorCodes.NotFound);
    assert.equal(await code(tasks.wait(ctx, "e1")), ErrorCodes.NotFound);
    await tasks.create(ctx, { containerId: "e1", rootfs: [], io: { stdin: "", stdout: "", stderr: "", terminal: false } });
    assert.equal(await code(tasks.create(ctx, { containerId: "e1", rootfs: [], io: { stdin: "", stdout: "", stderr: "", terminal: false } })), ErrorCodes.AlreadyExists);
    assert.deepEqual((await tasks.list(ctx)).map((t) => [t.id, t.status]), [["e1", TaskStatus.Created]]);
    assert.equal((await tasks.delete(ctx, "e1")).exitStatus, 137, "deleting a created task kills it");
    await containers.delete(ctx, "e1");
    await make("e2", ["true"], "io.containerd.nope.v1");
    assert.equal(await code(tasks.create(ctx, { containerId: "e2", rootfs: [], io: { stdin: "", stdout: "", stderr: "", terminal: false } })), ErrorCodes.NotFound);
    await containers.delete(ctx, "e2");
    assert.equal(await code(tasks.list(background())), ErrorCodes.FailedPrecondition);
    assert.equal(await code(tasks.checkpoint(ctx, "e2", {})), ErrorCodes.NotFound);
    await new Promise((r) => setTimeout(r, 500));
    assert.deepEqual(shimPids(stack), [], "no shim left without a task (no warm shims on this stack)");
  });

  test("external shim (Debian's containerd-shim-runc-v2 by configuration): run --rm through the external shim: output and exit code", async () => {
    const r = await dctr(["run", "--rm", "--runtime", DEBIAN_RUNTIME, ...rootfsArgs(rootfs), "deb1", "sh", "-c", "echo via-debian; echo e >&2; exit 3"]);
    assert.equal(r.code, 3, r.stderr);
    assert.equal(r.stdout, "via-debian\n");
    assert.equal(r.stderr, "e\n");
    await events.waitFor("deb1 deleted", (l) => l.some((e) => e.topic === "/containers/delete" && e.json.id === "deb1"));
    assert.deepEqual(events.forContainer("deb1").map((e) => e.topic), ["/containers/create", "/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete", "/containers/delete"]);
  });

  test("external shim: run -d, the shim process is Debian's, exec, ps, pause/resume, metrics, kill", async () => {
    assert.equal((await dctr(["run", "-d", "--runtime", DEBIAN_RUNTIME, ...rootfsArgs(rootfs), "deb2", "sleep", "1000"])).code, 0);
    await waitTaskStatus(stack, "deb2", "RUNNING", debNs);
    const shims = shimPids(stack).map((p) => fs.readFileSync(`/proc/${p}/cmdline`, "utf8").split("\0"));
    assert.ok(shims.some((c) => c[0] === DEBIAN_SHIM && c.includes("deb2")), JSON.stringify(shims));
    const bundle = path.join(stack.state, "tasks", "io.containerd.runtime.v2.task", debNs, "deb2");
    assert.equal(fs.readFileSync(path.join(bundle, "shim-binary-path"), "utf8"), DEBIAN_SHIM);
    assert.match(fs.readFileSync(path.join(bundle, "address"), "utf8"), /^unix:\/\/\/run\/containerd\/s\/[0-9a-f]{64}$/);

    const ex = await dctr(["t", "exec", "--exec-id", "x", "deb2", "sh", "-c", "echo exec-ok; exit 4"]);
    assert.equal(ex.code, 4, ex.stderr);
    assert.equal(ex.stdout, "exec-ok\n");
    const ps = await dctr(["t", "ps", "deb2"]);
    assert.equal(ps.code, 0, ps.stderr);
    assert.ok(ps.stdout.trim().split("\n").length >= 2);
    assert.equal((await dctr(["t", "pause", "deb2"])).code, 0);
    await waitTaskStatus(stack, "deb2", "PAUSED", debNs);
    assert.equal((await dctr(["t", "resume", "deb2"])).code, 0);
    const m = await dctr(["t", "metrics", "deb2"]);
    assert.equal(m.code, 0, m.stderr);
    assert.match(m.stdout, /deb2/);
    assert.equal((await dctr(["t", "kill", "-s", "SIGKILL", "deb2"])).code, 0);
    await events.waitFor("deb2 exit", (l) => l.some((e) => e.topic === "/tasks/exit" && e.json.container_id === "deb2" && e.json.exit_status === 137));
    assert.equal((await dctr(["t", "rm", "deb2"])).code, 0);
    assert.equal((await dctr(["c", "rm", "deb2"])).code, 0);
    const topics = events.forContainer("deb2").map((e) => e.topic);
    for (const t of ["/tasks/exec-added", "/tasks/exec-started", "/tasks/paused", "/tasks/resumed", "/tasks/delete"]) assert.ok(topics.includes(t), `${t} in ${topics.join(",")}`);
    assert.ok(!fs.existsSync(bundle), "bundle removed");
  });

  test("external shim stack: the same container runs under Flotilla's shim when no runtime is named", async () => {
    const r = await dctr(["run", "--rm", ...rootfsArgs(rootfs), "deb3", "sh", "-c", "exit 5"]);
    assert.equal(r.code, 5, r.stderr);
  });
});
