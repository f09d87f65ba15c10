/**
 * Issue 19 (items 3-9, 11): what containerd's Go client expects of the shim and the tasks process,
 * through the gateway with the real ctr: TTY output drained before an exec's exit, Kill after the
 * runtime lost the container, Update of a created task, binary:// log URIs, host-pid cleanup, the
 * legacy v1 runtime's error, the ShimCgroup option and user-namespaced containers.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as path from "node:path";
import * as tty from "node:tty";
import { background } from "#libs/context";
import { ErrorCodes } from "#libs/errdefs";
import { TaskServiceProxy } from "#libs/clients/tasks";
import { ContainerStoreProxy } from "#libs/clients/containers";
import { OCI_PROCESS_TYPE_URL, OCI_SPEC_TYPE_URL } from "#libs/core/containers";
import { mkfifo, openPty } from "#libs/sys/linux";
import { encode } from "#libs/proto";
import { startStack, waitFor, type Stack, testChannels } from "../harness";
import { startRegistry } from "../helpers/registry";
import { buildBusyboxImage, pushImage } from "../helpers/image";
import { alive, busyboxRootfs, code, rootfsArgs, shimPids, stopStackAndCleanup } from "./helpers";

const ctx = background("default");

/**
 * Run ctr on a pseudo-terminal of our own (stdin, stdout and stderr its slave, in a new session) and
 * read the master until EIO, so nothing ctr wrote is lost on our side; resolves with its exit code and
 * output.
 */
function ctrOnPty(socket: string, args: string[], timeoutMs = 120_000): Promise<{ code: number; out: Buffer }> {
  const pty = openPty();
  const slave = fs.openSync(pty.slave, fs.constants.O_RDWR | fs.constants.O_NOCTTY);
  const child = spawn("ctr", ["-a", socket, ...args], { stdio: [slave, slave, slave], detached: true });
  fs.closeSync(slave);
  const master = new tty.ReadStream(pty.master);
  const out: Buffer[] = [];
  master.on("data", (b: Buffer) => out.push(b));
  const drained = new Promise<void>((resolve) => {
    master.on("error", () => resolve());
    master.on("end", () => resolve());
    master.on("close", () => resolve());
  });
  const t = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
  const exited = new Promise<number>((resolve) => child.on("close", (code, signal) => resolve(code ?? (signal ? 128 : 1))));
  return Promise.all([exited, drained]).then(([code]) => {
    clearTimeout(t);
    master.destroy();
    return { code, out: Buffer.concat(out) };
  });
}

describe("tasks - Go client behaviours of the shim (issue 19)", () => {
  let stack: Stack;
  let rootfs: string;
  let tasks: TaskServiceProxy;
  const cgroupDirs: string[] = [];

  before(async () => {
    stack = await startStack();
    rootfs = busyboxRootfs(path.join(stack.dir, "rootfs"));
    tasks = new TaskServiceProxy(testChannels.get(stack.socket));
  });

  /** A logging binary: a shell script in its own directory, "$out" its first argument's value. */
  const writeLogger = (name: string, lines: string[]): { dir: string; logger: string } => {
    const dir = path.join(stack.dir, name);
    fs.mkdirSync(dir);
    const logger = path.join(dir, "logger.sh");
    fs.writeFileSync(logger, ["#!/bin/sh", 'out="$2"', ...lines, ""].join("\n"), { mode: 0o755 });
    return { dir, logger };
  };

  after(async () => {
    testChannels.close();
    await stopStackAndCleanup(stack);
    for (const d of cgroupDirs) fs.rmdirSync(d);
    // runc removes the host-pid container's cgroup, not its parent (/goclient).
    for (const h of fs.readdirSync("/sys/fs/cgroup")) {
      try {
        fs.rmdirSync(path.join("/sys/fs/cgroup", h, "goclient"));
      } catch {
        /* absent */
      }
    }
  });

  test("an exec with a terminal, deleted as soon as it exits (the Go client's order): its whole output still arrives", async () => {
    assert.equal((await stack.ctr(["run", "-d", ...rootfsArgs(rootfs), "ttygo", "sleep", "1000"])).code, 0);
    const stdout = path.join(stack.dir, "ttygo-out");
    mkfifo(stdout);
    // A slow reader, so that output is still queued in the pty and the shim when the process exits.
    const reader = new net.Socket({ fd: fs.openSync(stdout, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK), readable: true, writable: false });
    let text = "";
    const eof = new Promise<void>((resolve) => {
      reader.on("data", (b: Buffer) => {
        text += b.toString();
        reader.pause();
        setTimeout(() => reader.resume(), 40);
      });
      reader.on("end", () => resolve());
      reader.on("close", () => resolve());
    });
    const proc = { terminal: true, user: { uid: 0, gid: 0 }, args: ["sh", "-c", "seq 1 1000000; exit 3"], env: ["PATH=/bin"], cwd: "/" };
    await tasks.exec(ctx, "ttygo", "seq", { stdin: "", stdout, stderr: "", terminal: true }, { typeUrl: OCI_PROCESS_TYPE_URL, value: Buffer.from(JSON.stringify(proc)) });
    const waited = tasks.wait(ctx, "ttygo", "seq");
    await tasks.start(ctx, "ttygo", "seq");
    const exit = await waited;
    assert.equal(exit.exitStatus, 3);
    const deleted = await tasks.deleteProcess(ctx, "ttygo", "seq");
    assert.equal(deleted.exitStatus, 3);
    await eof;
    const lines = text.split("\n").map((l) => l.replace(/\r+$/, "")).filter((l) => l !== "");
    const gap = lines.findIndex((l, i) => l !== String(i + 1));
    assert.equal(lines.length, 1000000, `lines received (first wrong: line ${gap + 1} is ${JSON.stringify(lines[gap])}, last: ${lines.at(-1)})`);
    assert.equal(lines.at(-1), "1000000");
    assert.equal(await code(tasks.get(ctx, "ttygo", "seq")), ErrorCodes.NotFound);
    assert.equal((await stack.ctr(["t", "rm", "-f", "ttygo"])).code, 0);
    assert.equal((await stack.ctr(["c", "rm", "ttygo"])).code, 0);
  });

  test("an exec with a terminal: every line printed before its exit reaches the client, and its exit is reported", async () => {
    assert.equal((await stack.ctr(["run", "-d", ...rootfsArgs(rootfs), "ttybig", "sleep", "1000"])).code, 0);
    const r = await ctrOnPty(stack.socket, ["t", "exec", "-t", "--exec-id", "seq", "ttybig", "sh", "-c", "seq 1 1000000; exit 5"]);
    const lines = r.out.toString().split("\n").map((l) => l.replace(/\r+$/, "")).filter((l) => l !== "");
    assert.equal(lines.length, 1000000, `lines received (last: ${lines.at(-1)})`);
    assert.equal(lines.at(-1), "1000000");
    assert.equal(r.code, 5, "the exec's exit status");
    const ps = await stack.ctr(["t", "ps", "ttybig"]);
    assert.equal(ps.stdout.trim().split("\n").length, 2, `only the init is left: ${ps.stdout}`);
    assert.equal((await stack.ctr(["t", "rm", "-f", "ttybig"])).code, 0);
    assert.equal((await stack.ctr(["c", "rm", "ttybig"])).code, 0);
  });

  test("Kill after the runtime lost the container (its state removed behind our back): NotFound, as containerd answers", async () => {
    assert.equal((await stack.ctr(["run", "-d", ...rootfsArgs(rootfs), "lost1", "sleep", "1000"])).code, 0);
    const pid = (await tasks.get(ctx, "lost1")).pid;
    fs.rmSync(path.join(stack.state, "tasks", "runc", "default", "lost1"), { recursive: true });
    assert.equal(await code(tasks.kill(ctx, "lost1", 15)), ErrorCodes.NotFound);
    const r = await stack.ctr(["t", "kill", "lost1"]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /not found/);
    process.kill(pid, "SIGKILL");
    await tasks.wait(ctx, "lost1");
    assert.equal((await stack.ctr(["t", "rm", "lost1"])).code, 0);
    assert.equal((await stack.ctr(["c", "rm", "lost1"])).code, 0);
  });

  test("Update of a created task works, and a new memory limit shows in the container's cgroup", async () => {
    const limitOf = (pid: number): number => {
      const lines = fs.readFileSync(`/proc/${pid}/cgroup`, "utf8").trim().split("\n");
      const v1 = lines.find((l) => l.split(":")[1]!.split(",").includes("memory"));
      if (v1) return Number(fs.readFileSync(path.join("/sys/fs/cgroup/memory", v1.split(":")[2]!, "memory.limit_in_bytes"), "utf8"));
      return Number(fs.readFileSync(path.join("/sys/fs/cgroup", lines.find((l) => l.startsWith("0::"))!.slice(3), "memory.max"), "utf8"));
    };
    const resources = (limit: number): { typeUrl: string; value: Buffer } => ({ typeUrl: "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources", value: Buffer.from(JSON.stringify({ memory: { limit } })) });
    assert.equal((await stack.ctr(["c", "create", "--memory-limit", String(64 << 20), ...rootfsArgs(rootfs), "upd1", "sleep", "1000"])).code, 0);
    const pid = await tasks.create(ctx, { containerId: "upd1", rootfs: [], io: { stdin: "", stdout: "", stderr: "", terminal: false } });
    assert.equal(limitOf(pid), 64 << 20);
    await tasks.update(ctx, "upd1", resources(96 << 20));
    assert.equal(limitOf(pid), 96 << 20, "updated while created");
    await tasks.start(ctx, "upd1");
    await tasks.update(ctx, "upd1", resources(48 << 20));
    assert.equal(limitOf(pid), 48 << 20, "updated while running");
    await tasks.update(ctx, "upd1", resources(128 << 20));
    assert.equal(limitOf(pid), 128 << 20, "raised while running");
    assert.equal((await stack.ctr(["t", "rm", "-f", "upd1"])).code, 0);
    assert.equal((await stack.ctr(["c", "rm", "upd1"])).code, 0);
  });

  test("binary:// log URIs: the logging binary gets stdout/stderr as fds 3 and 4, its env and args, and is ready before the container runs", async () => {
    // Writes its arguments and environment, copies fds 3 and 4 to files, leaves a marker in the
    // container's rootfs, then closes fd 5 (ready). The copies do not inherit fd 5.
    const { dir, logger } = writeLogger("logbin", [
      'echo "args=$* id=$CONTAINER_ID ns=$CONTAINER_NAMESPACE home=${HOME:-unset}" > "$out.meta"',
      'cat <&3 > "$out.stdout" 5>&- &',
      'cat <&4 > "$out.stderr" 5>&- &',
      "sleep 0.3",
      'echo ready > "$4/logger-ready"',
      "exec 5>&-",
      "wait",
    ]);
    const out = path.join(dir, "c1");
    const uri = `binary://${logger}?out=${encodeURIComponent(out)}&rootfs=${encodeURIComponent(rootfs)}`;
    const r = await stack.ctr(["run", "--rm", "--log-uri", uri, ...rootfsArgs(rootfs), "logbin1", "sh", "-c", "cat /logger-ready; echo to-stdout; echo to-stderr >&2; exit 4"]);
    assert.equal(r.code, 4, r.stderr);
    assert.equal(fs.readFileSync(`${out}.meta`, "utf8"), `args=out ${out} rootfs ${rootfs} id=logbin1 ns=default home=unset\n`);
    await waitFor("the logger's copies", () => fs.readFileSync(`${out}.stderr`, "utf8") === "to-stderr\n" && fs.readFileSync(`${out}.stdout`, "utf8").endsWith("to-stdout\n") || undefined);
    assert.equal(fs.readFileSync(`${out}.stdout`, "utf8"), "ready\nto-stdout\n", "the container ran after the logger was ready");
    fs.rmSync(path.join(rootfs, "logger-ready"));
    // A logging binary that cannot be started: the task is not created.
    const bad = await stack.ctr(["run", "--rm", "--log-uri", `binary://${dir}/missing`, ...rootfsArgs(rootfs), "logbin2", "true"]);
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /failed to start binary process/);
    await stack.ctr(["c", "rm", "logbin2"]);
  });

  test("binary:// log URIs with a terminal: the pty's whole output reaches the binary's fd 3, fd 4 reads EOF, the binary is ready before the start and stopped at the delete", async () => {
    // Copies fd 3 to a file, notes fd 4's EOF, leaves a marker in the rootfs, closes fd 5 (ready), then
    // stays until SIGTERM (noted in a file).
    const { dir, logger } = writeLogger("logbin-tty", [
      'trap \'echo term > "$out.term"; exit 0\' TERM',
      'echo "$$ id=$CONTAINER_ID ns=$CONTAINER_NAMESPACE" > "$out.meta"',
      'cat <&3 > "$out.stdout" 5>&- &',
      '{ cat <&4 > "$out.stderr"; echo eof > "$out.stderr-eof"; } 5>&- &',
      "sleep 0.3",
      'echo ready > "$4/tty-logger-ready"',
      "exec 5>&-",
      "wait",
      "while :; do sleep 0.1; done",
    ]);
    const out = path.join(dir, "t1");
    const uri = `binary://${logger}?out=${encodeURIComponent(out)}&rootfs=${encodeURIComponent(rootfs)}`;
    // ctr's -t makes the spec's process.terminal true; the task is created as the Go client does it
    // with a terminal and a log URI (ctr itself drops the terminal when given --log-uri). The command
    // is a script: ctr create takes a "-c" after its arguments for one of its own flags.
    fs.writeFileSync(path.join(rootfs, "tty-logger-cmd"), "cat /tty-logger-ready; echo to-stderr >&2; seq 1 200000; exit 3\n");
    const c = await stack.ctr(["c", "create", "-t", ...rootfsArgs(rootfs), "logbintty", "sh", "/tty-logger-cmd"]);
    assert.equal(c.code, 0, c.stderr);
    await tasks.create(ctx, { containerId: "logbintty", rootfs: [], io: { stdin: "", stdout: uri, stderr: uri, terminal: true } });
    assert.equal(fs.existsSync(path.join(rootfs, "tty-logger-ready")), true, "Create returned after the binary was ready");
    const meta = fs.readFileSync(`${out}.meta`, "utf8");
    const m = /^(\d+) id=logbintty ns=default\n$/.exec(meta);
    assert.ok(m, meta);
    const loggerPid = Number(m[1]);
    await waitFor("fd 4's EOF", () => fs.existsSync(`${out}.stderr-eof`) || undefined);
    const waited = tasks.wait(ctx, "logbintty");
    await tasks.start(ctx, "logbintty");
    assert.equal((await waited).exitStatus, 3);
    const expected = ["ready", "to-stderr", ...Array.from({ length: 200000 }, (_, i) => String(i + 1))];
    const lines = (): string[] => fs.readFileSync(`${out}.stdout`, "utf8").split("\n").map((l) => l.replace(/\r+$/, "")).filter((l) => l !== "");
    await waitFor("the logger's copy of the last line", () => lines().at(-1) === "200000" || undefined);
    assert.deepEqual(lines(), expected, "the container ran after the logger was ready, and every line reached fd 3");
    assert.equal(fs.readFileSync(`${out}.stderr`, "utf8"), "");
    assert.equal(alive(loggerPid) && !fs.existsSync(`${out}.term`), true, "the binary runs until the delete");
    const d = await tasks.delete(ctx, "logbintty");
    assert.equal(d.exitStatus, 3);
    await waitFor("the binary's SIGTERM", () => fs.existsSync(`${out}.term`) || undefined);
    await waitFor("the binary's exit", () => !alive(loggerPid) || undefined);
    for (const f of ["tty-logger-ready", "tty-logger-cmd"]) fs.rmSync(path.join(rootfs, f));
    // A logging binary that cannot be started: no task (and the container can take one again).
    const bad = tasks.create(ctx, { containerId: "logbintty", rootfs: [], io: { stdin: "", stdout: `binary://${dir}/missing`, stderr: "", terminal: true } });
    await assert.rejects(bad, /failed to start binary process/);
    assert.equal(await code(tasks.get(ctx, "logbintty")), ErrorCodes.NotFound);
    assert.equal((await stack.ctr(["c", "rm", "logbintty"])).code, 0);
  });

  test("a host-pid container whose init dies alone: deleting the task and the container leaves no process and no record", async () => {
    // No pid namespace of its own (the Go client's WithHostNamespace(pid)); its children do not die
    // with the init.
    const spec = {
      ociVersion: "1.0.2-dev",
      process: { user: { uid: 0, gid: 0 }, args: ["sh", "-c", "sleep 1001 & sleep 1002 & wait"], env: ["PATH=/bin"], cwd: "/" },
      root: { path: rootfs },
      mounts: [{ destination: "/proc", type: "proc", source: "proc", options: ["nosuid", "noexec", "nodev"] }],
      linux: { cgroupsPath: "/goclient/hostpid1", namespaces: [{ type: "ipc" }, { type: "uts" }, { type: "mount" }] },
    };
    await new ContainerStoreProxy(testChannels.get(stack.socket)).create(ctx, { id: "hostpid1", runtime: { name: "io.containerd.runc.v2" }, spec: { typeUrl: OCI_SPEC_TYPE_URL, value: Buffer.from(JSON.stringify(spec)) } });
    await tasks.create(ctx, { containerId: "hostpid1", rootfs: [], io: { stdin: "", stdout: "", stderr: "", terminal: false } });
    await tasks.start(ctx, "hostpid1");
    const initPid = (await tasks.get(ctx, "hostpid1")).pid;
    const children = await waitFor("the children", () => {
      const kids = fs.readFileSync(`/proc/${initPid}/task/${initPid}/children`, "utf8").trim().split(/\s+/).filter(Boolean).map(Number);
      return kids.length === 2 ? kids : undefined;
    });
    const k = await stack.ctr(["t", "kill", "-s", "SIGKILL", "hostpid1"]);
    assert.equal(k.code, 0, k.stderr);
    await tasks.wait(ctx, "hostpid1");
    // The Go client's WithProcessKill: Kill(SIGKILL, all) after the exit may answer ok, NotFound or
    // FailedPrecondition (it then goes on with the delete), nothing else.
    assert.ok(["ok", ErrorCodes.NotFound, ErrorCodes.FailedPrecondition].includes(await code(tasks.kill(ctx, "hostpid1", 9, { all: true }))));
    const d = await stack.ctr(["t", "rm", "-f", "hostpid1"]);
    assert.equal(d.code, 0, d.stderr);
    const c = await stack.ctr(["c", "rm", "hostpid1"]);
    assert.equal(c.code, 0, c.stderr);
    await waitFor("the children to be gone", () => children.every((pid) => !fs.existsSync(`/proc/${pid}`)) || undefined, 10_000);
    assert.equal((await stack.ctr(["c", "ls", "-q"])).stdout.includes("hostpid1"), false);
    assert.equal((await stack.ctr(["t", "ls", "-q"])).stdout.includes("hostpid1"), false);
  });

  test("a task for the legacy v1 runtime fails as containerd 1.6 fails it, not by looking for containerd-shim-v1-linux", async () => {
    const r = await stack.ctr(["run", "--rm", "--runtime", "io.containerd.runtime.v1.linux", ...rootfsArgs(rootfs), "legacy1", "true"]);
    assert.notEqual(r.code, 0);
    assert.doesNotMatch(r.stderr, /containerd-shim-v1-linux/);
    // The stack runs with this process's PATH: containerd 1.6 starts containerd-shim from it, and
    // without one answers exec's error.
    const installed = (process.env.PATH ?? "").split(":").some((d) => d && fs.existsSync(path.join(d, "containerd-shim")));
    if (installed) assert.match(r.stderr, /^ctr: failed to start shim: runtime "io.containerd.runtime.v1.linux" \(containerd-shim, the v1 shim API\) is not supported; use io.containerd.runc.v2: not implemented\n$/);
    else assert.equal(r.stderr, 'ctr: failed to start shim: exec: "containerd-shim": executable file not found in $PATH: unknown\n');
    assert.equal((await stack.ctr(["c", "ls", "-q"])).stdout.includes("legacy1"), false);
  });

  test("the runc option ShimCgroup puts the shim in that cgroup", async () => {
    const rel = `/flt-go2-shim-${process.pid}`;
    const hierarchies = fs.readFileSync("/proc/self/mountinfo", "utf8").split("\n").map((l) => l.split(" ")).filter((p) => p[p.indexOf("-") + 1] === "cgroup" || p[p.indexOf("-") + 1] === "cgroup2").map((p) => p[4]!);
    const legacy = hierarchies.some((h) => /\/(memory|pids|cpu)$/.test(h));
    // v1: the memory and pids hierarchies (a new cpuset cgroup takes no process until given cpus).
    const dirs = hierarchies.filter((h) => legacy ? /\/(memory|pids)$/.test(h) : fs.existsSync(path.join(h, "cgroup.controllers"))).map((h) => path.join(h, rel));
    for (const d of dirs) fs.mkdirSync(d);
    cgroupDirs.push(...dirs);
    const options = { typeUrl: "containerd.runc.v1.Options", value: encode("containerd.runc.v1.Options", { shim_cgroup: rel }) };
    const spec = { ociVersion: "1.0.2-dev", process: { user: { uid: 0, gid: 0 }, args: ["sleep", "1000"], env: ["PATH=/bin"], cwd: "/" }, root: { path: rootfs }, mounts: [{ destination: "/proc", type: "proc", source: "proc", options: ["nosuid", "noexec", "nodev"] }], linux: { namespaces: [{ type: "pid" }, { type: "mount" }] } };
    await new ContainerStoreProxy(testChannels.get(stack.socket)).create(ctx, { id: "shimcg1", runtime: { name: "io.containerd.runc.v2", options }, spec: { typeUrl: OCI_SPEC_TYPE_URL, value: Buffer.from(JSON.stringify(spec)) } });
    await tasks.create(ctx, { containerId: "shimcg1", rootfs: [], io: { stdin: "", stdout: "", stderr: "", terminal: false } });
    const shims = shimPids(stack);
    for (const d of dirs) {
      const procs = fs.readFileSync(path.join(d, "cgroup.procs"), "utf8").trim().split("\n").filter(Boolean).map(Number);
      assert.ok(procs.some((p) => shims.includes(p)), `a shim of this stack is in ${d}: ${procs.join(",")}`);
    }
    assert.equal((await stack.ctr(["t", "rm", "-f", "shimcg1"])).code, 0);
    assert.equal((await stack.ctr(["c", "rm", "shimcg1"])).code, 0);
  });

  test("user namespaces: a remapped image rootfs runs, writable and read-only (ctr run --uidmap/--gidmap --remap-labels)", async () => {
    // The remapped root must be able to reach the bundles (containerd's state root is 0711 too).
    fs.chmodSync(stack.dir, 0o711);
    const reg = await startRegistry();
    try {
      // The runtime cannot create mount points in a rootfs the container's root does not own: the
      // image has them, as real images do.
      const dirs = ["proc", "sys", "dev", "run", "tmp", "etc"].map((d) => ({ path: d, type: "dir" as const, mode: 0o755 }));
      await pushImage(reg, "test/busybox", "latest", buildBusyboxImage({ applets: ["sh", "cat", "echo", "id", "touch", "ls"], extraFiles: dirs }));
      const ref = `${reg.host}/test/busybox:latest`;
      const p = await stack.ctr(["images", "pull", "--plain-http", ref], { timeoutMs: 120000 });
      assert.equal(p.code, 0, p.stderr);
      const maps = ["--uidmap", "0:100000:65536", "--gidmap", "0:100000:65536"];
      // --remap-labels: the snapshot is as the image made it (owned by the host's root, like
      // containerd 1.6's overlayfs, which ignores the labels): it runs, and its root is uid 100000.
      for (const extra of [[], ["--read-only"]]) {
        const id = `userns-labels${extra.length ? "-ro" : ""}`;
        const r = await stack.ctr(["run", "--rm", ...extra, ...maps, "--remap-labels", ref, id, "sh", "-c", "cat /proc/self/uid_map; id -u"]);
        assert.equal(r.code, 0, `${id}: ${r.stderr}`);
        assert.match(r.stdout, /^\s*0\s+100000\s+65536\n0\n$/, id);
      }
      // Without --remap-labels the client chowns the snapshot: the container's root owns its rootfs.
      const rw = await stack.ctr(["run", "--rm", ...maps, ref, "userns-chown", "sh", "-c", "touch /written && cat /proc/self/uid_map"]);
      assert.equal(rw.code, 0, rw.stderr);
      assert.match(rw.stdout, /^\s*0\s+100000\s+65536\n$/);
      const ro = await stack.ctr(["run", "--rm", "--read-only", ...maps, ref, "userns-chown-ro", "sh", "-c", "touch /written 2>/dev/null || echo read-only"]);
      assert.equal(ro.code, 0, ro.stderr);
      assert.equal(ro.stdout, "read-only\n");
    } finally {
      await reg.stop();
    }
  });
});
