/**
 * Issue 6 acceptance with the real ctr through the whole stack, on a busybox rootfs directory
 * (`ctr run --rootfs`, no image needed): run --rm output and exit codes, stdin, env and bind mounts,
 * detached tasks with ls/ps/exec/pause/resume/metrics/kill/rm/attach/start, containers commands, a
 * pseudo-terminal, the event order, bad input without leaks, and a shim killed under a task.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { startStack, waitFor, sleep, type Stack } from "../harness";
import {
  alive,
  busyboxRootfs,
  EventsWatcher,
  mountsBelow,
  rootfsArgs,
  runcContainers,
  shimPids,
  stopStackAndCleanup,
  taskShimPid,
  waitTaskStatus,
} from "./helpers";

describe("tasks - real ctr, rootfs directories", () => {
  let stack: Stack;
  let rootfs: string;
  let events: EventsWatcher;
  let run: (id: string, cmd: string[], extra?: string[], input?: string) => Promise<{ code: number; stdout: string; stderr: string }>;

  before(async () => {
    stack = await startStack();
    rootfs = busyboxRootfs(path.join(stack.dir, "rootfs"));
    fs.writeFileSync(path.join(rootfs, "bin", "exit7"), "#!/bin/sh\necho started\nexit 7\n", { mode: 0o755 });
    events = new EventsWatcher(stack);
    await events.ready();
    run = (id, cmd, extra = [], input) => stack.ctr(["run", "--rm", ...extra, ...rootfsArgs(rootfs), id, ...cmd], input !== undefined ? { input } : {});
  });

  after(async () => {
    events?.stop();
    await stopStackAndCleanup(stack);
  });

  test("plugins: the runtime, services and ttrpc events plugins are reported ok", async () => {
    const r = await stack.ctr(["plugins", "ls"]);
    assert.equal(r.code, 0, r.stderr);
    for (const [type, id] of [
      ["io.containerd.runtime.v2", "task"],
      ["io.containerd.runtime.v2", "shim"],
      ["io.containerd.service.v1", "containers-service"],
      ["io.containerd.service.v1", "tasks-service"],
      ["io.containerd.grpc.v1", "containers"],
      ["io.containerd.grpc.v1", "tasks"],
      ["io.containerd.ttrpc.v1", "events"],
    ]) {
      assert.match(r.stdout, new RegExp(`^${type.replace(/\./g, "\\.")}\\s+${id}\\s+.*\\bok\\s*$`, "m"), `${type} ${id}`);
    }
  });

  test("run --rm prints the container's stdout and stderr and exits with its status", async () => {
    const r = await run("out1", ["sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert.equal(r.code, 3, r.stderr);
    assert.equal(r.stdout, "out\n");
    assert.equal(r.stderr, "err\n");
    assert.equal((await run("ok1", ["true"])).code, 0);
    assert.equal((await run("false1", ["false"])).code, 1);
    // A signal ends the process: 128 + signal (SIGKILL from outside; PID 1 ignores its own kill -9).
    const sleeper = stack.ctr(["run", "--rm", ...rootfsArgs(rootfs), "kill9", "sleep", "1000"]);
    await waitTaskStatus(stack, "kill9", "RUNNING");
    assert.equal((await stack.ctr(["t", "kill", "-s", "SIGKILL", "kill9"])).code, 0);
    const killed = await sleeper;
    assert.equal(killed.code, 137, killed.stderr);
    const big = await run("big1", ["sh", "-c", "i=0; while [ $i -lt 3000 ]; do echo line-$i-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx; i=$((i+1)); done"]);
    assert.equal(big.code, 0, big.stderr);
    const lines = big.stdout.trim().split("\n");
    assert.equal(lines.length, 3000, "no output lost");
    assert.equal(lines[2999], "line-2999-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
    const ls = await stack.ctr(["c", "ls", "-q"]);
    assert.equal(ls.stdout.trim(), "", "--rm removed every container");
  });

  test("stdin reaches the container; EOF (CloseIO) ends it", async () => {
    const child = spawn("ctr", ["-a", stack.socket, "run", "--rm", ...rootfsArgs(rootfs), "stdin1", "sh", "-c", "while read l; do echo got:$l; done; echo eof"], { stdio: ["pipe", "pipe", "pipe"] });
    let out = "";
    child.stdout.on("data", (b: Buffer) => (out += b.toString()));
    await waitTaskStatus(stack, "stdin1", "RUNNING");
    child.stdin.write("one\ntwo\n");
    await waitFor("echoed input", () => (out.includes("got:two") ? true : undefined));
    child.stdin.end();
    const code = await new Promise<number>((r) => child.on("close", (c) => r(c ?? -1)));
    assert.equal(code, 0);
    assert.equal(out, "got:one\ngot:two\neof\n");
  });

  test("--env, --mount binds (read-only too) and --cwd", async () => {
    const r = await run("env1", ["sh", "-c", "echo $FOO-$BAR"], ["--env", "FOO=foo", "--env", "BAR=bar"]);
    assert.equal(r.stdout, "foo-bar\n", r.stderr);
    const host = path.join(stack.dir, "bind");
    fs.mkdirSync(host);
    fs.writeFileSync(path.join(host, "hello.txt"), "from the host\n");
    const b = await run("bind1", ["sh", "-c", "cat /data/hello.txt; echo new > /data/new.txt"], ["--mount", `type=bind,src=${host},dst=/data,options=rbind:rw`]);
    assert.equal(b.code, 0, b.stderr);
    assert.equal(b.stdout, "from the host\n");
    assert.equal(fs.readFileSync(path.join(host, "new.txt"), "utf8"), "new\n");
    const ro = await run("bind2", ["sh", "-c", "echo x > /data/ro.txt"], ["--mount", `type=bind,src=${host},dst=/data,options=rbind:ro`]);
    assert.notEqual(ro.code, 0);
    assert.match(ro.stderr, /Read-only file system/);
    const cwd = await run("cwd1", ["pwd"], ["--cwd", "/tmp"]);
    assert.equal(cwd.stdout, "/tmp\n");
  });

  test("run -d; task ls, ps, exec, pause/resume, metrics, kill, rm", async () => {
    const d = await stack.ctr(["run", "-d", ...rootfsArgs(rootfs), "det1", "sh", "-c", "trap 'exit 42' TERM; while true; do sleep 0.1; done"]);
    assert.equal(d.code, 0, d.stderr);
    await waitTaskStatus(stack, "det1", "RUNNING");
    const ls = await stack.ctr(["t", "ls"]);
    const row = ls.stdout.split("\n").find((l) => l.startsWith("det1"))!;
    const pid = Number(row.split(/\s+/)[1]);
    assert.ok(pid > 0 && alive(pid), ls.stdout);

    const ex = await stack.ctr(["t", "exec", "--exec-id", "e1", "det1", "sh", "-c", "echo in-exec; exit 5"]);
    assert.equal(ex.code, 5, ex.stderr);
    assert.equal(ex.stdout, "in-exec\n");
    const exEnv = await stack.ctr(["t", "exec", "--exec-id", "e2", "--cwd", "/tmp", "det1", "sh", "-c", "pwd; echo $PATH"]);
    assert.equal(exEnv.code, 0, exEnv.stderr);
    assert.equal(exEnv.stdout, "/tmp\n/bin\n");

    const bg = await stack.ctr(["t", "exec", "-d", "--exec-id", "e3", "det1", "sleep", "30"]);
    assert.equal(bg.code, 0, bg.stderr);
    const ps = await stack.ctr(["t", "ps", "det1"]);
    assert.equal(ps.code, 0, ps.stderr);
    assert.match(ps.stdout, new RegExp(`^${pid}\\s+-`, "m"), ps.stdout);
    assert.match(ps.stdout, /^\d+\s+&ProcessDetails\{ExecID:e3,\}|^\d+\s+.*e3/m, ps.stdout);
    const dup = await stack.ctr(["t", "exec", "-d", "--exec-id", "e3", "det1", "true"]);
    assert.notEqual(dup.code, 0);
    assert.match(dup.stderr, /already exists/);
    assert.equal((await stack.ctr(["t", "kill", "--exec-id", "e3", "-s", "SIGKILL", "det1"])).code, 0);

    assert.equal((await stack.ctr(["t", "pause", "det1"])).code, 0);
    await waitTaskStatus(stack, "det1", "PAUSED");
    const frozen = fs.readFileSync(`/proc/${pid}/status`, "utf8");
    assert.ok(frozen.length > 0);
    assert.equal((await stack.ctr(["t", "resume", "det1"])).code, 0);
    await waitTaskStatus(stack, "det1", "RUNNING");

    const m = await stack.ctr(["t", "metrics", "det1"]);
    assert.equal(m.code, 0, m.stderr);
    assert.match(m.stdout, /det1/);
    assert.match(m.stdout, /memory\.usage_in_bytes|memory\.usage|pids\.current/, m.stdout);

    const rmRunning = await stack.ctr(["t", "rm", "det1"]);
    assert.notEqual(rmRunning.code, 0, "a running task is not removed without -f");

    assert.equal((await stack.ctr(["t", "kill", "det1"])).code, 0);
    await waitTaskStatus(stack, "det1", "STOPPED");
    await events.waitFor("exit 42", (ls2) => ls2.some((l) => l.topic === "/tasks/exit" && l.json.container_id === "det1" && l.json.id === "det1" && l.json.exit_status === 42));
    const again = await stack.ctr(["t", "kill", "det1"]);
    assert.notEqual(again.code, 0);
    assert.match(again.stderr, /process already finished/);
    assert.equal((await stack.ctr(["t", "rm", "det1"])).code, 0);
    assert.equal((await stack.ctr(["c", "rm", "det1"])).code, 0);
    assert.ok(!alive(pid));
  });

  test("task rm -f kills and removes a running task; task start runs a created container", async () => {
    assert.equal((await stack.ctr(["run", "-d", ...rootfsArgs(rootfs), "force1", "sleep", "1000"])).code, 0);
    await waitTaskStatus(stack, "force1", "RUNNING");
    const rm = await stack.ctr(["t", "rm", "-f", "force1"]);
    assert.equal(rm.code, 0, rm.stderr);
    assert.equal((await stack.ctr(["c", "rm", "force1"])).code, 0);

    const c = await stack.ctr(["c", "create", ...rootfsArgs(rootfs), "start1", "exit7"]);
    assert.equal(c.code, 0, c.stderr);
    const s = await stack.ctr(["t", "start", "start1"]);
    assert.equal(s.code, 7, s.stderr);
    assert.equal(s.stdout, "started\n");
    assert.equal((await stack.ctr(["c", "rm", "start1"])).code, 0);
  });

  test("task attach streams a detached task's output and returns its exit code", async () => {
    assert.equal((await stack.ctr(["run", "-d", ...rootfsArgs(rootfs), "att1", "sh", "-c", "sleep 1; echo late; exit 9"])).code, 0);
    const a = await stack.ctr(["t", "attach", "att1"]);
    assert.equal(a.code, 9, a.stderr);
    assert.match(a.stdout, /late/);
    await stack.ctr(["c", "rm", "att1"]);
  });

  test("a pool shim whose task is deleted serves the next task, also in another namespace, with that namespace's events", async () => {
    assert.equal((await stack.ctr(["run", "-d", ...rootfsArgs(rootfs), "pool1", "sleep", "1000"])).code, 0);
    await waitTaskStatus(stack, "pool1", "RUNNING");
    const shim = taskShimPid(stack, "pool1");
    assert.ok(shim && alive(shim));
    assert.equal((await stack.ctr(["t", "rm", "-f", "pool1"])).code, 0);
    assert.equal((await stack.ctr(["c", "rm", "pool1"])).code, 0);
    // Back in the pool: alive, serving nothing, no bundle of its own.
    await waitFor("the shim back in the pool", () => (alive(shim) && !fs.readlinkSync(`/proc/${shim}/cwd`).includes("pool1") ? true : undefined), 5000);
    const other = await stack.ctr(["run", "-d", ...rootfsArgs(rootfs), "pool2", "sh", "-c", "echo hi; sleep 1000"], { namespace: "other" });
    assert.equal(other.code, 0, other.stderr);
    await waitTaskStatus(stack, "pool2", "RUNNING", "other");
    assert.equal(taskShimPid(stack, "pool2"), shim, "the recycled shim took the next task");
    assert.equal((await stack.ctr(["t", "kill", "-s", "SIGKILL", "pool2"], { namespace: "other" })).code, 0);
    await events.waitFor("pool2 exit in its namespace", (ls) => ls.some((l) => l.topic === "/tasks/exit" && l.json.container_id === "pool2" && l.ns === "other"));
    assert.deepEqual(events.forContainer("pool2").filter((l) => l.topic.startsWith("/tasks/")).map((l) => [l.ns, l.topic]).slice(0, 3), [["other", "/tasks/create"], ["other", "/tasks/start"], ["other", "/tasks/exit"]]);
    assert.ok(!events.forContainer("pool2").some((l) => l.ns !== "other"), "no event of pool2 outside its namespace");
    assert.equal((await stack.ctr(["t", "rm", "pool2"], { namespace: "other" })).code, 0);
    assert.equal((await stack.ctr(["c", "rm", "pool2"], { namespace: "other" })).code, 0);
  });

  test("containers ls, info (spec byte for byte), label, rm", async () => {
    assert.equal((await stack.ctr(["c", "create", "--label", "team=a", ...rootfsArgs(rootfs), "cont1", "true"])).code, 0);
    const ls = await stack.ctr(["c", "ls"]);
    assert.match(ls.stdout, /^cont1\s+-\s+io\.containerd\.runc\.v2/m);
    const filtered = await stack.ctr(["c", "ls", "labels.team==a"]);
    assert.match(filtered.stdout, /cont1/);
    const none = await stack.ctr(["c", "ls", "-q", "labels.team==b"]);
    assert.equal(none.stdout.trim(), "");
    const info = JSON.parse((await stack.ctr(["c", "info", "cont1"])).stdout) as { Spec: { root: { path: string } }; Labels: Record<string, string>; Runtime: { Name: string } };
    assert.equal(info.Spec.root.path, rootfs);
    assert.equal(info.Labels.team, "a");
    assert.equal(info.Runtime.Name, "io.containerd.runc.v2");
    assert.equal((await stack.ctr(["c", "label", "cont1", "team=b", "extra=1"])).code, 0);
    const info2 = JSON.parse((await stack.ctr(["c", "info", "cont1"])).stdout) as { Labels: Record<string, string> };
    assert.equal(info2.Labels.team, "b");
    assert.equal(info2.Labels.extra, "1");
    assert.equal((await stack.ctr(["c", "label", "cont1", "extra="])).code, 0);
    const info3 = JSON.parse((await stack.ctr(["c", "info", "cont1"])).stdout) as { Labels: Record<string, string> };
    assert.ok(!("extra" in info3.Labels));
    assert.equal((await stack.ctr(["c", "rm", "cont1"])).code, 0);
    const gone = await stack.ctr(["c", "info", "cont1"]);
    assert.notEqual(gone.code, 0);
    assert.match(gone.stderr, /not found/);
  });

  test("OOM kill: exit 137, /tasks/oom before /tasks/exit", async () => {
    const r = await run("oom1", ["sh", "-c", "x=xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx; while true; do x=$x$x; done"], ["--memory-limit", String(16 << 20)]);
    assert.equal(r.code, 137, r.stderr);
    await events.waitFor("oom1 exit", (ls) => ls.some((l) => l.topic === "/tasks/exit" && l.json.container_id === "oom1"));
    const topics = events.forContainer("oom1").map((l) => l.topic);
    assert.ok(topics.includes("/tasks/oom"), topics.join(","));
    assert.ok(topics.indexOf("/tasks/oom") < topics.indexOf("/tasks/exit"), topics.join(","));
  });

  test("run -t under a pseudo-terminal", async () => {
    const cmd = `ctr -a ${stack.socket} run -t --rm ${rootfsArgs(rootfs).join(" ")} tty1 sh -c 'tty; echo $((6*7)); exit 4'`;
    // script(1) gives ctr a terminal; its stdin stays open until ctr is done (EOF would hang up the session).
    const child = spawn("script", ["-qefc", cmd, "/dev/null"], { stdio: ["pipe", "pipe", "pipe"] });
    let out = "";
    child.stdout.on("data", (b: Buffer) => (out += b.toString()));
    child.stderr.on("data", (b: Buffer) => (out += b.toString()));
    const status = await new Promise<number | null>((r) => child.on("close", (c) => r(c)));
    child.stdin.destroy();
    assert.equal(status, 4, out);
    assert.match(out, /\/dev\/pts\/\d+/);
    assert.match(out, /42/);

    // exec -t into a detached task
    assert.equal((await stack.ctr(["run", "-d", ...rootfsArgs(rootfs), "tty2", "sleep", "1000"])).code, 0);
    const ecmd = `ctr -a ${stack.socket} t exec -t --exec-id et tty2 sh -c 'tty; exit 6'`;
    const ex = spawn("script", ["-qefc", ecmd, "/dev/null"], { stdio: ["pipe", "pipe", "pipe"] });
    let eout = "";
    ex.stdout.on("data", (b: Buffer) => (eout += b.toString()));
    const estatus = await new Promise<number | null>((r) => ex.on("close", (c) => r(c)));
    ex.stdin.destroy();
    assert.equal(estatus, 6, eout);
    assert.match(eout, /\/dev\/pts\/\d+/);
    assert.equal((await stack.ctr(["t", "rm", "-f", "tty2"])).code, 0);
    assert.equal((await stack.ctr(["c", "rm", "tty2"])).code, 0);
  });

  test("events come in containerd's order", async () => {
    assert.equal((await run("ev1", ["sh", "-c", "exit 2"])).code, 2);
    await events.waitFor("ev1 container delete", (ls) => ls.some((l) => l.topic === "/containers/delete" && l.json.id === "ev1"));
    const topics = events.forContainer("ev1").map((l) => l.topic);
    assert.deepEqual(topics, ["/containers/create", "/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete", "/containers/delete"]);
    const exit = events.forContainer("ev1").find((l) => l.topic === "/tasks/exit")!;
    assert.equal(exit.json.exit_status, 2);
    assert.equal(exit.ns, "default");

    assert.equal((await stack.ctr(["run", "-d", ...rootfsArgs(rootfs), "ev2", "sleep", "1000"])).code, 0);
    assert.equal((await stack.ctr(["t", "exec", "--exec-id", "x1", "ev2", "true"])).code, 0);
    assert.equal((await stack.ctr(["t", "pause", "ev2"])).code, 0);
    assert.equal((await stack.ctr(["t", "resume", "ev2"])).code, 0);
    assert.equal((await stack.ctr(["t", "rm", "-f", "ev2"])).code, 0);
    await events.waitFor("ev2 task delete", (ls) => ls.some((l) => l.topic === "/tasks/delete" && l.json.container_id === "ev2"));
    const t2 = events.forContainer("ev2").map((l) => l.topic);
    assert.deepEqual(t2, ["/containers/create", "/tasks/create", "/tasks/start", "/tasks/exec-added", "/tasks/exec-started", "/tasks/exit", "/tasks/paused", "/tasks/resumed", "/tasks/exit", "/tasks/delete"]);
    const execExit = events.forContainer("ev2").filter((l) => l.topic === "/tasks/exit")[0]!;
    assert.equal(execExit.json.id, "x1");
    await stack.ctr(["c", "rm", "ev2"]);
  });

  test("bad input fails clearly and leaks no shim, bundle or mount", async () => {
    const before = shimPids(stack).length;
    const missing = await stack.ctr(["run", "--rm", "--env", "PATH=/bin", "--rootfs", path.join(stack.dir, "no-such-rootfs"), "bad1", "true"]);
    assert.notEqual(missing.code, 0);
    assert.match(missing.stderr, /OCI runtime create failed/);
    const noexec = await run("bad2", ["/no/such/binary"]);
    assert.notEqual(noexec.code, 0);
    assert.match(noexec.stderr, /no such file or directory|not found/);
    const rt = await run("bad3", ["true"], ["--runtime", "io.containerd.nope.v1"]);
    assert.notEqual(rt.code, 0);
    assert.match(rt.stderr, /containerd-shim-nope-v1/);
    const badSpec = await run("bad4", ["true"], ["--memory-limit", "1"]);
    assert.notEqual(badSpec.code, 0, "runc rejects a 1-byte memory limit");
    assert.match(badSpec.stderr, /OCI runtime (create|start) failed/);
    await waitFor("shims of failed tasks to exit", () => (shimPids(stack).length <= before ? true : undefined), 10000);
    const bundles = path.join(stack.state, "tasks", "io.containerd.runtime.v2.task", "default");
    const left = fs.existsSync(bundles) ? fs.readdirSync(bundles).filter((d) => d.startsWith("bad")) : [];
    assert.deepEqual(left, []);
    assert.deepEqual(mountsBelow(path.join(stack.state, "tasks")), []);
    assert.deepEqual(runcContainers(path.join(stack.state, "tasks", "runc")).filter((c) => c.id.startsWith("bad")), []);
    const ls = await stack.ctr(["c", "ls", "-q"]);
    assert.equal(ls.stdout.trim(), "");
  });

  test("a shim killed under a running task: /tasks/exit and /tasks/delete, task gone", async () => {
    assert.equal((await stack.ctr(["run", "-d", ...rootfsArgs(rootfs), "dead1", "sleep", "1000"])).code, 0);
    await waitTaskStatus(stack, "dead1", "RUNNING");
    const shim = taskShimPid(stack, "dead1");
    assert.ok(shim, "the shim of dead1 runs");
    process.kill(shim, "SIGKILL");
    await events.waitFor("dead1 delete", (ls) => ls.some((l) => l.topic === "/tasks/delete" && l.json.container_id === "dead1"));
    const ex = events.forContainer("dead1").find((l) => l.topic === "/tasks/exit")!;
    assert.equal(ex.json.exit_status, 137);
    const t = await stack.ctr(["t", "ls", "-q"]);
    assert.doesNotMatch(t.stdout, /dead1/);
    await sleep(100);
    assert.deepEqual(runcContainers(path.join(stack.state, "tasks", "runc")).filter((c) => c.id === "dead1"), []);
    assert.equal((await stack.ctr(["c", "rm", "dead1"])).code, 0);
  });
});
