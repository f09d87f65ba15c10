/**
 * The `shim` sandboxer on the whole stack with Flotilla's shim (runtime io.containerd.flotilla.v2,
 * bin/containerd-shim-flotilla-v2): `flotilla sandbox run --sandboxer shim`, then `flotilla run
 * --sandbox`, whose task the tasks process creates in the sandbox's own shim (Tasks.Create with the
 * task API address Start returned), joining the sandbox process's namespaces; stop and rm leave nothing.
 */
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { after, before, describe, it } from "node:test";
import { flotilla as runFlotilla, type FlotillaResult } from "../helpers/flotilla";
import { startStack, type Stack } from "../harness";
import { buildBusyboxImage, startRegistry, type Registry } from "../images/registry";
import { alive } from "../tasks/helpers";

/** `bin/flotilla -a SOCK ARGS...` against the stack (killed, and failed, after `timeoutMs`). */
function flotilla(stack: Stack, args: string[], timeoutMs = 60000): Promise<FlotillaResult> {
  return runFlotilla(["-a", stack.socket, ...args], { timeoutMs });
}

function findDir(root: string, name: string, depth = 5): string | undefined {
  if (depth < 0) return undefined;
  let entries: fs.Dirent[];
  try {
    entries = fs.readdirSync(root, { withFileTypes: true });
  } catch {
    return undefined;
  }
  for (const e of entries) {
    if (!e.isDirectory()) continue;
    const p = path.join(root, e.name);
    if (e.name === name && fs.existsSync(path.join(p, "bootstrap.json"))) return p;
    const found = findDir(p, name, depth - 1);
    if (found) return found;
  }
  return undefined;
}

/** How many `run --sandbox --rm` members the test runs, one after another. */
const MEMBER_RUNS = 12;

const ppid = (pid: number): number => Number(/PPid:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? 0);

describe("sandbox: the shim sandboxer with Flotilla's shim on the stack", () => {
  let stack: Stack;
  let reg: Registry;
  let image: string;
  const ok = async (args: string[]): Promise<string> => {
    const r = await flotilla(stack, args);
    assert.equal(r.code, 0, `flotilla ${args.join(" ")} failed: ${r.stderr}${r.stdout}`);
    return r.stdout;
  };

  before(async () => {
    reg = await startRegistry();
    await reg.push("test/busybox", "shimpod", buildBusyboxImage({ tag: "shimpod" }));
    image = `${reg.host}/test/busybox:shimpod`;
    // A collection after every mutation (a prepared snapshot is one): a member's snapshot not yet
    // referenced by its container is swept unless something holds it from the start.
    stack = await startStack({ logLevel: "warn", extraToml: '[plugins."io.containerd.gc.v1.scheduler"]\nmutation_threshold = 1\npause_threshold = 0.5' });
    const pull = await stack.ctr(["images", "pull", "--plain-http", image], { timeoutMs: 120000 });
    assert.equal(pull.code, 0, pull.stderr);
  });

  after(async () => {
    await stack?.stop();
    await reg?.stop();
  });

  it("shim sandbox on the stack - members run in the sandbox's shim and namespaces; stop and rm leave nothing", async () => {
    await ok(["sandbox", "run", "--sandboxer", "shim", "--runtime", "io.containerd.flotilla.v2", "spod"]);
    const insp = JSON.parse(await ok(["sandbox", "inspect", "spod"])) as { sandboxer: string; status: { state: string; pid: number; address: string; version: number } };
    assert.equal(insp.sandboxer, "shim");
    assert.equal(insp.status.state, "SANDBOX_READY");
    assert.match(insp.status.address, /^ttrpc\+unix:\/\//);
    const pausePid = insp.status.pid;
    const shimPid = ppid(pausePid);
    assert.ok(alive(shimPid) && fs.readFileSync(`/proc/${shimPid}/cmdline`, "utf8").includes("services/shim/main.js"), "Flotilla's shim holds the sandbox process");

    // Short-lived members one after another, each removed when done (a pod's jobs): every one of them
    // gets its rootfs mounted, whatever the collector does in between.
    const member = async (i: number): Promise<void> => {
      const r = await flotilla(stack, ["run", "--sandbox", "spod", "--rm", image, "/bin/sh", "-c", "hostname; readlink /proc/self/ns/pid; readlink /proc/self/ns/ipc; echo $PPID"]);
      assert.equal(r.code, 0, `member run ${i}: ${r.stderr}`);
      const [host, pidns, ipcns] = r.stdout.trim().split("\n");
      assert.equal(host, os.hostname(), "no pod network given: the host's network and hostname, as a hostNetwork pod");
      assert.equal(ipcns, fs.readlinkSync(`/proc/${pausePid}/ns/ipc`), "the member joins the sandbox's IPC namespace");
      assert.notEqual(pidns, fs.readlinkSync("/proc/self/ns/pid"), "a pid namespace of its own (members do not share the pod's by default)");
    };
    for (let i = 0; i < MEMBER_RUNS; i++) await member(i);

    // A detached member: its process is a child of the sandbox's shim (no other shim was started for it).
    assert.equal((await ok(["run", "--sandbox", "spod", "-d", "--name", "smember", image, "/bin/sleep", "1000"])).trim(), "smember");
    const ls = await stack.ctr(["tasks", "ls"]);
    const row = ls.stdout.split("\n").find((l) => l.startsWith("smember"));
    assert.ok(row && /RUNNING/.test(row), ls.stdout);
    const memberPid = Number(row.split(/\s+/)[1]);
    assert.equal(ppid(memberPid), shimPid, "the member task is served by the sandbox's shim");
    const bundle = findDir(stack.state, "smember");
    assert.ok(bundle, "the member's bundle");
    assert.equal(JSON.parse(fs.readFileSync(path.join(bundle, "bootstrap.json"), "utf8")).address, insp.status.address.replace(/^ttrpc\+/, ""));
    assert.equal(fs.readFileSync(path.join(bundle, "sandbox"), "utf8"), "spod");

    await ok(["sandbox", "stop", "-t", "1", "spod"]);
    assert.match(await ok(["sandbox", "ls"]), /spod\s+NOTREADY/);
    assert.match((await stack.ctr(["tasks", "ls"])).stdout, /smember\s+\d+\s+STOPPED/, "stopping the sandbox stopped its member");
    assert.ok(!alive(pausePid));
    // The shim sandboxer does not own the pod's containers (a CRI removes them first).
    for (const args of [["tasks", "rm", "smember"], ["containers", "rm", "smember"]]) {
      const x = await stack.ctr(args);
      assert.equal(x.code, 0, `${args.join(" ")}: ${x.stderr}`);
    }
    await ok(["sandbox", "rm", "spod"]);
    assert.equal((await ok(["sandbox", "ls", "-q"])).trim(), "");
    assert.doesNotMatch((await stack.ctr(["containers", "ls", "-q"])).stdout, /smember|spod/);
    for (let i = 0; i < 100 && alive(shimPid); i++) await new Promise((res) => setTimeout(res, 50));
    assert.ok(!alive(shimPid), "the sandbox's shim exited with nothing left to serve");
  });
});
