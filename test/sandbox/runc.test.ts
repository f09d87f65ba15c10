/**
 * The podsandbox controller with real containers (runc through test/sandbox/runc-tasks.ts) and real CNI:
 * the pause container holds the pod's namespaces, a member container built with libs/sandboxrun joins
 * them, two containers share localhost, the pod IP answers from the host, and stop + shutdown leave
 * nothing behind.
 */
import { execFileSync, spawnSync } from "node:child_process";
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { after, before, describe, it } from "node:test";
import { background } from "#libs/context";
import { createLogger } from "#libs/log";
import { listNetns } from "#libs/cni";
import { SandboxState } from "#libs/core/sandbox";
import { sandboxMemberSpec } from "#libs/sandboxrun";
import { openSandboxDB, type SandboxDB } from "#services/sandbox/src/local/db";
import { PodSandboxController } from "#services/sandbox/src/local/podsandbox/controller";
import { PodNetworks } from "#services/sandbox/src/local/podsandbox/network";
import { ensurePauseRootfs } from "#services/sandbox/src/local/podsandbox/pause";
import { RuncTasks } from "./runc-tasks";
import { makeTestNet, pings, type TestNet } from "./net-helpers";

const log = createLogger("runc-test", "silent");

function tcpRead(host: string, port: number, ms = 3000): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host, port });
    let b = "";
    const t = setTimeout(() => {
      s.destroy();
      reject(new Error(`no answer from ${host}:${port}`));
    }, ms);
    s.on("data", (d) => (b += d.toString()));
    s.on("end", () => {
      clearTimeout(t);
      resolve(b);
    });
    s.on("error", (e) => {
      clearTimeout(t);
      reject(e);
    });
  });
}

const nsOf = (pid: number, t: string): string => fs.readlinkSync(`/proc/${pid}/ns/${t}`);

describe("podsandbox with runc", () => {
  let dir: string;
  let tnet: TestNet;
  let db: SandboxDB;
  let tasks: RuncTasks;
  let pods: PodSandboxController;
  const ns = "flt-runc-test";
  const ctx = background(ns);

  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "flt-runc-"));
    tnet = makeTestNet();
    db = openSandboxDB(dir);
    tasks = new RuncTasks(dir);
    const networks = new PodNetworks({ confDir: tnet.confDir, binDirs: ["/usr/lib/cni"], netnsDir: tnet.netnsDir, log });
    pods = new PodSandboxController({ db, tasks, networks, pauseDir: path.join(dir, "pause"), netnsDir: tnet.netnsDir, log, killWaitMs: 5000 });
  });
  after(async () => {
    pods.close();
    tasks.cleanup([ns]);
    await db.close();
    tnet.cleanup();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("podsandbox with runc - containers share the pod's namespaces and localhost; rm leaves nothing", async () => {
    await pods.create(ctx, { id: "rpod", runtime: { name: "io.containerd.runc.v2" }, spec: { typeUrl: "types.containerd.io/opencontainers/runtime-spec/1/Spec", value: Buffer.from('{"hostname":"rpod-host"}') } });
    const inst = await pods.start(ctx, "rpod");
    const st = await pods.status(ctx, "rpod");
    assert.equal(st.state, SandboxState.Ready);
    const netns = st.info.netns!;
    const ip = st.info.ips!;
    assert.equal(nsOf(inst.pid, "net"), execFileSync("nsenter", [`--net=${netns}`, "readlink", "/proc/self/ns/net"], { encoding: "utf8" }).trim(), "the pause process is in the pod's netns");
    assert.notEqual(nsOf(inst.pid, "ipc"), nsOf(process.pid, "ipc"));
    assert.equal(execFileSync("nsenter", ["-t", String(inst.pid), "-u", "hostname"], { encoding: "utf8" }).trim(), "rpod-host");

    const rootfs = ensurePauseRootfs(path.join(dir, "pause"));
    const member = async (id: string, args: string[]): Promise<number> => {
      const spec = sandboxMemberSpec({ namespace: ns, id, sandboxId: "rpod", pausePid: inst.pid, netns, args, env: [], cwd: "/", user: "", readonlyRootfs: true });
      await tasks.createContainer(ctx, { id, labels: {}, runtime: "io.containerd.runc.v2", spec, sandbox: "rpod" });
      await tasks.createTask(ctx, id, [{ type: "bind", source: rootfs, options: ["rbind", "ro"] }]);
      return tasks.startTask(ctx, id);
    };
    const srv = await member("srv", ["/bin/busybox", "nc", "-ll", "-p", "8080", "-e", "/bin/busybox", "echo", "hello-from-rpod"]);
    const idle = await member("idle", ["/bin/busybox", "sleep", "1000"]);
    for (const t of ["net", "ipc", "uts"]) {
      assert.equal(nsOf(srv, t), nsOf(inst.pid, t), `srv shares the pod's ${t} namespace`);
      assert.equal(nsOf(idle, t), nsOf(inst.pid, t), `idle shares the pod's ${t} namespace`);
    }
    assert.notEqual(nsOf(srv, "pid"), nsOf(inst.pid, "pid"));
    let answer = "";
    for (let i = 0; i < 50 && !answer; i++) {
      answer = await tcpRead(ip, 8080).catch(() => "");
      if (!answer) await new Promise((r) => setTimeout(r, 100));
    }
    assert.match(answer, /hello-from-rpod/, "the pod's IP answers from the host through the bridge");
    // The other container reaches the server over the pod's localhost.
    const viaLocalhost = spawnSync("nsenter", ["-t", String(idle), "-n", "busybox", "nc", "127.0.0.1", "8080"], { encoding: "utf8", timeout: 5000 });
    assert.match(viaLocalhost.stdout, /hello-from-rpod/);

    await pods.stop(ctx, "rpod", { timeoutSecs: 1 });
    for (const id of ["rpod", "srv", "idle"]) assert.equal((await tasks.getTask(ctx, id)).status, 3, `${id} stopped`);
    assert.equal((await pods.wait(ctx, "rpod")).exitStatus, 137);
    assert.ok(!pings(ip));
    await pods.shutdown(ctx, "rpod");
    assert.deepEqual(await tasks.listContainers(ctx), []);
    assert.equal(spawnSync("runc", ["--root", path.join(dir, "runc"), "list", "-q"], { encoding: "utf8" }).stdout.trim(), "");
    assert.deepEqual(listNetns(tnet.netnsDir), []);
    assert.deepEqual(tnet.allocations(), []);
    assert.deepEqual(tnet.bridgePorts(), []);
  });
});
