/**
 * Issue 8 acceptance, tried as a new user would: the whole stack from `bin/flotilla up`, the
 * `flotilla sandbox ...` and `flotilla run --sandbox` commands through the gateway, a busybox-static
 * image from a docker-registry on loopback (pulled with the real ctr), real CNI plugins on a bridge of
 * the test's own. The parts that need running containers are skipped while the tasks process does not
 * implement the Tasks API yet.
 */
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as net from "node:net";
import * as path from "node:path";
import { after, before, describe, it } from "node:test";
import { background } from "#libs/context";
import { ErrorCodes } from "#libs/errdefs";
import { SandboxControllerProxy, SandboxStoreProxy } from "#libs/clients/sandbox";
import { listNetns } from "#libs/cni";
import { ContentStoreProxy } from "#libs/clients/content";
import { ImageStoreProxy } from "#libs/clients/images";
import { SnapshotterProxy } from "#libs/clients/snapshots";
import { resolveImage } from "#libs/sandboxrun";
import { flotilla as runFlotilla, type FlotillaResult } from "../helpers/flotilla";
import { startStack, waitFor, type Stack, testChannels } from "../harness";
import { buildBusyboxImage, startRegistry, type Registry } from "../images/registry";
import { makeTestNet, pings, type TestNet } from "./net-helpers";
import { rejectsWith } from "./store-suite";

/** Run `flotilla sandbox ...` / `flotilla run ...` (the exported commands of cli/sandbox.ts) against the stack. */
/** `bin/flotilla -a SOCK ARGS...` against the stack (killed, and failed, after `timeoutMs`). */
function flotilla(stack: Stack, args: string[], timeoutMs = 60000): Promise<FlotillaResult> {
  return runFlotilla(["-a", stack.socket, ...args], { timeoutMs });
}

function tcpRead(host: string, port: number, ms = 5000): Promise<string> {
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

describe("sandbox: the stack, the CLI and real CNI", () => {
  let stack: Stack;
  let reg: Registry;
  let tnet: TestNet;
  let image: string;
  const ctx = background("default");
  const ok = async (args: string[]): Promise<string> => {
    const r = await flotilla(stack, args);
    assert.equal(r.code, 0, `flotilla ${args.join(" ")} failed: ${r.stderr}${r.stdout}`);
    return r.stdout;
  };
  const netnsDir = (): string => path.join(stack.state, "sandbox", "netns");

  before(async () => {
    tnet = makeTestNet();
    reg = await startRegistry();
    await reg.push("test/busybox", "pod", buildBusyboxImage({ tag: "pod" }));
    image = `${reg.host}/test/busybox:pod`;
    stack = await startStack({
      extraToml: [
        '[plugins."io.containerd.podsandbox.controller.v1.podsandbox"]',
        `cni_conf_dir = ${JSON.stringify(tnet.confDir)}`,
        'cni_bin_dir = ["/usr/lib/cni"]',
      ].join("\n"),
    });
  });

  after(async () => {
    await stack?.stop();
    await reg?.stop();
    tnet?.cleanup();
  });

  it("sandbox - plugins are listed and the APIs answer through the gateway", async () => {
    const r = await stack.ctr(["plugins", "ls"]);
    for (const [type, id] of [
      ["io.containerd.sandbox.store.v1", "local"],
      ["io.containerd.podsandbox.controller.v1", "podsandbox"],
      ["io.containerd.sandbox.controller.v1", "shim"],
      ["io.containerd.grpc.v1", "sandboxes"],
      ["io.containerd.grpc.v1", "sandbox-controllers"],
    ]) {
      assert.match(r.stdout, new RegExp(`${type.replace(/\./g, "\\.")}\\s+${id}\\s+-\\s+ok`), `${type} ${id}`);
    }
    const store = new SandboxStoreProxy(testChannels.get(stack.socket));
    await store.create(ctx, { id: "rec-only", runtime: { name: "io.containerd.runc.v2" }, labels: { a: "b" } });
    assert.deepEqual((await store.list(ctx, ["labels.a==b"])).map((s) => s.id), ["rec-only"]);
    const ns = await stack.ctr(["namespaces", "rm", "default"]);
    assert.notEqual(ns.code, 0, "a namespace holding a sandbox cannot be removed");
    assert.match(ns.stderr, /sandboxes/);
    await store.delete(ctx, "rec-only");
  });

  it("sandbox - bad input: unknown sandboxer NotFound, empty InvalidArgument, broken CNI config leaves nothing", async () => {
    await rejectsWith(new SandboxControllerProxy(testChannels.get(stack.socket), "").create(ctx, { id: "x", runtime: { name: "r" } }), ErrorCodes.InvalidArgument);
    await rejectsWith(new SandboxControllerProxy(testChannels.get(stack.socket), "no-such").create(ctx, { id: "x", runtime: { name: "r" } }), ErrorCodes.NotFound);
    const bad = await flotilla(stack, ["sandbox", "run", "--sandboxer", "no-such", "badsb"]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /failed to get sandbox controller by no-such: not found/);
    const conf = path.join(tnet.confDir, "10-flt.conflist");
    const good = fs.readFileSync(conf, "utf8");
    fs.writeFileSync(conf, '{"cniVersion": "1.0.0", "name": "x", "plugins": [');
    try {
      const r = await flotilla(stack, ["sandbox", "run", "broken"]);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /cni config .*10-flt\.conflist: invalid JSON/);
    } finally {
      fs.writeFileSync(conf, good);
    }
    assert.equal((await ok(["sandbox", "ls", "-q"])).trim(), "", "no record left");
    assert.deepEqual(listNetns(netnsDir()), []);
    assert.deepEqual(tnet.allocations(), []);
    assert.deepEqual(tnet.bridgePorts(), []);
  });

  it("sandbox - run resolves a pulled image to its unpacked snapshot and process defaults through the gateway", async () => {
    const pull = await stack.ctr(["images", "pull", "--plain-http", image], { timeoutMs: 120000 });
    assert.equal(pull.code, 0, pull.stderr);
    const img = await resolveImage(ctx, new ImageStoreProxy(testChannels.get(stack.socket)), new ContentStoreProxy(testChannels.get(stack.socket)), image);
    assert.deepEqual(img.cmd, ["/bin/sh"]);
    assert.deepEqual(img.env, ["PATH=/bin"]);
    const info = await SnapshotterProxy.connect(testChannels.get(stack.socket), "overlayfs").stat(ctx, img.chainId);
    assert.equal(info.kind, "committed");
    const r = await flotilla(stack, ["run", "--sandbox", "nosuch", image, "true"]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /sandbox "nosuch": not found/);
  });

  it("sandbox - a sandbox that cannot start is rolled back (tasks process unavailable)", async () => {
    // Hold the supervisor so the killed tasks process stays down while the sandbox starts.
    const sup = JSON.parse(fs.readFileSync(path.join(stack.state, "supervisor.json"), "utf8")).pid as number;
    process.kill(sup, "SIGSTOP");
    let old: number;
    let r: Awaited<ReturnType<typeof flotilla>>;
    try {
      old = stack.kill("tasks", "SIGKILL");
      await waitFor("tasks to die", () => {
        const st = fs.existsSync(`/proc/${old}/stat`) ? fs.readFileSync(`/proc/${old}/stat`, "utf8") : "";
        return st === "" || /\) Z /.test(st) ? true : undefined;
      });
      r = await flotilla(stack, ["sandbox", "run", "--label", "app=web", "nostart"]);
    } finally {
      process.kill(sup, "SIGCONT");
    }
    await stack.waitRestarted("tasks", old!);
    assert.equal(r!.code, 1);
    assert.match(r!.stderr, /unavailable/i);
    assert.equal((await ok(["sandbox", "ls", "-q"])).trim(), "");
    assert.deepEqual(listNetns(netnsDir()), []);
    assert.deepEqual(tnet.allocations(), []);
    assert.deepEqual(tnet.bridgePorts(), []);
  });

  it("sandbox - two containers share localhost, the pod IP answers from the host, a second pod differs, kill -9 survives, rm leaves nothing", async () => {

    const [, ipA] = (await ok(["sandbox", "run", "--label", "app=web", "pod-a"])).trim().split(" ");
    const [, ipB] = (await ok(["sandbox", "run", "pod-b"])).trim().split(" ");
    assert.ok(ipA && ipB && ipA !== ipB, `${ipA} vs ${ipB}`);
    assert.ok(ipA!.startsWith(tnet.prefix + "."));
    assert.ok(pings(ipA!), "the pod IP answers from the host through the bridge");

    // A server in one container, a client in another, over the pod's localhost.
    const server = (await ok(["run", "--sandbox", "pod-a", "-d", "--name", "srv", image, "/bin/busybox", "nc", "-ll", "-p", "8080", "-e", "/bin/busybox", "echo", "hello-from-pod-a"])).trim();
    assert.equal(server, "srv");
    const client = await waitFor("the server to listen", async () => {
      const r = await flotilla(stack, ["run", "--sandbox", "pod-a", "--rm", image, "/bin/busybox", "nc", "127.0.0.1", "8080"]);
      return r.code === 0 && r.stdout.includes("hello-from-pod-a") ? r : undefined;
    }, 20000, 250);
    assert.match(client.stdout, /hello-from-pod-a/);
    assert.match(await tcpRead(ipA!, 8080), /hello-from-pod-a/, "the pod's port answers on its IP from the host");
    // Containers of the other pod do not see pod-a's localhost.
    const other = await flotilla(stack, ["run", "--sandbox", "pod-b", "--rm", image, "/bin/busybox", "nc", "-w", "1", "127.0.0.1", "8080"]);
    assert.doesNotMatch(other.stdout, /hello-from-pod-a/);

    const ls = await ok(["sandbox", "ls"]);
    assert.match(ls, new RegExp(`pod-a\\s+READY\\s+${ipA!.replace(/\./g, "\\.")}`));
    const insp = JSON.parse(await ok(["sandbox", "inspect", "pod-a"])) as { labels: Record<string, string>; status: { state: string; pid: number } };
    assert.deepEqual(insp.labels, { app: "web" });
    assert.equal(insp.status.state, "SANDBOX_READY");

    // kill -9 the sandbox and tasks processes: sandboxes and containers are still there.
    const oldSandbox = stack.kill("sandbox");
    const oldTasks = stack.kill("tasks");
    await stack.waitRestarted("sandbox", oldSandbox, 30000);
    await stack.waitRestarted("tasks", oldTasks, 30000);
    await waitFor("pod-a ready after the restart", async () => ((await flotilla(stack, ["sandbox", "ls"])).stdout.match(/pod-a\s+READY/) ? true : undefined), 20000, 250);
    assert.match(await tcpRead(ipA!, 8080), /hello-from-pod-a/);
    const tasksLs = await stack.ctr(["tasks", "ls"]);
    assert.match(tasksLs.stdout, /srv\s+\d+\s+RUNNING/);

    // Stop: the sandbox and its containers stop cleanly; rm leaves no namespace, veth or address.
    await ok(["sandbox", "stop", "-t", "1", "pod-a"]);
    assert.match(await ok(["sandbox", "ls"]), /pod-a\s+NOTREADY/);
    assert.doesNotMatch((await stack.ctr(["tasks", "ls"])).stdout, /srv\s+\d+\s+RUNNING/);
    const rmRunning = await flotilla(stack, ["sandbox", "rm", "pod-b"]);
    assert.equal(rmRunning.code, 1, "a running sandbox needs rm -f");
    await ok(["sandbox", "rm", "pod-a"]);
    await ok(["sandbox", "rm", "-f", "pod-b"]);
    assert.equal((await ok(["sandbox", "ls", "-q"])).trim(), "");
    assert.doesNotMatch((await stack.ctr(["containers", "ls", "-q"])).stdout, /srv|pod-a|pod-b/);
    assert.deepEqual(listNetns(netnsDir()), []);
    assert.deepEqual(tnet.allocations(), []);
    assert.deepEqual(tnet.bridgePorts(), []);
    assert.ok(!pings(ipA!));
  });
});
