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
import { background } from "../../libs/context";
import { ErrorCodes } from "../../libs/errdefs";
import { closeChannels } from "../../libs/grpc/client";
import { TaskServiceProxy } from "../../libs/clients/tasks";
import { OCI_PROCESS_TYPE_URL } from "../../libs/core/containers";
import { mkfifo } from "../../libs/sys/linux";
import { startStack, type Stack } from "../harness";
import { busyboxRootfs, code, rootfsArgs, stopStackAndCleanup } from "./helpers";

const ctx = background("default");

/** Run a ctr command line under script(1), which gives it a terminal; resolves with its exit code and output. */
function underScript(cmd: string, timeoutMs = 120_000): Promise<{ code: number; out: Buffer }> {
  return new Promise((resolve) => {
    const child = spawn("script", ["-qefc", cmd, "/dev/null"], { stdio: ["pipe", "pipe", "pipe"] });
    const out: Buffer[] = [];
    child.stdout.on("data", (b: Buffer) => out.push(b));
    child.stderr.on("data", (b: Buffer) => out.push(b));
    const t = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("close", (code, signal) => {
      clearTimeout(t);
      child.stdin.end();
      resolve({ code: code ?? (signal ? 128 : 1), out: Buffer.concat(out) });
    });
  });
}

describe("tasks - Go client behaviours of the shim (issue 19)", () => {
  let stack: Stack;
  let rootfs: string;
  let tasks: TaskServiceProxy;

  before(async () => {
    stack = await startStack();
    rootfs = busyboxRootfs(path.join(stack.dir, "rootfs"));
    tasks = new TaskServiceProxy(stack.socket);
  });

  after(async () => {
    closeChannels();
    await stopStackAndCleanup(stack);
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
    assert.equal(lines.length, 1000000, `lines received (last: ${lines.at(-1)})`);
    assert.equal(lines.at(-1), "1000000");
    assert.equal(await code(tasks.get(ctx, "ttygo", "seq")), ErrorCodes.NotFound);
    assert.equal((await stack.ctr(["t", "rm", "-f", "ttygo"])).code, 0);
    assert.equal((await stack.ctr(["c", "rm", "ttygo"])).code, 0);
  });

  test("an exec with a terminal: every line printed before its exit reaches the client, and its exit is reported", async () => {
    assert.equal((await stack.ctr(["run", "-d", ...rootfsArgs(rootfs), "ttybig", "sleep", "1000"])).code, 0);
    const r = await underScript(`ctr -a ${stack.socket} t exec -t --exec-id seq ttybig sh -c 'seq 1 1000000; exit 5'`);
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
});
