/**
 * The podsandbox controller through the Controller gRPC API, with real CNI networking and an in-memory
 * tasks process: lifecycle, events, member containers, errors, and recovery after a crash.
 */
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, describe, it } from "node:test";
import { background } from "#libs/context";
import { ErrorCodes } from "#libs/errdefs";
import { createLogger } from "#libs/log";
import { createNetns, isMounted, listNetns } from "#libs/cni";
import { SandboxControllerProxy, SandboxStoreProxy } from "#libs/clients/sandbox";
import { SandboxState, type SandboxController } from "#libs/core/sandbox";
import { PodSandboxController, podKey, type PodRecord } from "#services/sandbox/src/local/podsandbox/controller";
import { PodNetworks } from "#services/sandbox/src/local/podsandbox/network";
import { toStored } from "#services/sandbox/src/local/store";
import { FakeTasks } from "./fake-tasks";
import { serveSandbox, type ServedSandbox } from "./fixtures";
import { makeTestNet, pings, type TestNet } from "./net-helpers";
import { rejectsWith } from "./store-suite";
import { testChannels } from "../harness";

const log = createLogger("podsandbox-test", "silent");
const BIN = ["/usr/lib/cni"];

const waitUntil = async (what: string, fn: () => boolean, ms = 5000): Promise<void> => {
  const until = Date.now() + ms;
  while (!fn()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
};

describe("podsandbox", () => {
  let net: TestNet;
  let served: ServedSandbox;
  let tasks: FakeTasks;
  let pods: PodSandboxController;
  let networks: PodNetworks;
  let ctl: SandboxControllerProxy;
  let store: SandboxStoreProxy;
  const ctx = background("default");

  const makeController = (t: FakeTasks): PodSandboxController =>
    new PodSandboxController({ db: served.local.db, tasks: t, networks, pauseDir: path.join(net.dir, "pause"), netnsDir: net.netnsDir, log, killWaitMs: 2000 });

  before(async () => {
    net = makeTestNet();
    tasks = new FakeTasks();
    networks = new PodNetworks({ confDir: net.confDir, binDirs: BIN, netnsDir: net.netnsDir, log });
    // The registry calls whichever controller is current (the recovery test replaces it, as a restart would).
    const current: SandboxController = {
      create: (...a) => pods.create(...a),
      start: (...a) => pods.start(...a),
      platform: (...a) => pods.platform(...a),
      stop: (...a) => pods.stop(...a),
      wait: (...a) => pods.wait(...a),
      status: (...a) => pods.status(...a),
      shutdown: (...a) => pods.shutdown(...a),
      metrics: (...a) => pods.metrics(...a),
      update: (...a) => pods.update(...a),
    };
    served = await serveSandbox({ podsandbox: current });
    pods = makeController(tasks);
    ctl = new SandboxControllerProxy(testChannels.get(served.address), "podsandbox");
    store = new SandboxStoreProxy(testChannels.get(served.address));
  });
  after(async () => {
    pods.close();
    await served.close();
    testChannels.close();
    net.cleanup();
  });

  it("podsandbox - an empty sandboxer is InvalidArgument, an unknown one NotFound", async () => {
    await rejectsWith(new SandboxControllerProxy(testChannels.get(served.address), "").status(ctx, "x"), ErrorCodes.InvalidArgument, /sandbox controller name can not be empty/);
    await rejectsWith(new SandboxControllerProxy(testChannels.get(served.address), "nope").create(ctx, { id: "x", runtime: { name: "r" } }), ErrorCodes.NotFound, /nope/);
    await rejectsWith(ctl.status(ctx, "missing"), ErrorCodes.NotFound);
    await rejectsWith(ctl.start(ctx, "missing"), ErrorCodes.NotFound);
    await rejectsWith(ctl.status(background(), "x"), ErrorCodes.FailedPrecondition);
  });

  it("podsandbox - create, start, stop, wait, shutdown with events, network and member containers", async () => {
    const sb = await store.create(ctx, { id: "pod1", runtime: { name: "io.containerd.runc.v2" }, labels: { app: "web" }, sandboxer: "podsandbox" });
    const nEvents = served.events.events.length;
    await ctl.create(ctx, sb);
    await rejectsWith(ctl.create(ctx, sb), ErrorCodes.AlreadyExists);
    let st = await ctl.status(ctx, "pod1");
    assert.equal(st.state, SandboxState.Unknown);
    const ip = st.info.ips!;
    assert.ok(ip.startsWith(net.prefix + "."), ip);
    assert.ok(isMounted(st.info.netns!));
    assert.ok(pings(ip));

    const inst = await ctl.start(ctx, "pod1");
    assert.ok(inst.pid > 0);
    assert.deepEqual(inst.labels, { app: "web" });
    await rejectsWith(ctl.start(ctx, "pod1"), ErrorCodes.FailedPrecondition, /already running/);
    st = await ctl.status(ctx, "pod1", true);
    assert.equal(st.state, SandboxState.Ready);
    assert.equal(st.pid, inst.pid);
    assert.ok(st.info.info);
    const pause = tasks.containers.get("default/pod1")!;
    assert.equal(pause.sandbox, "pod1");
    const spec = pause.spec as { linux: { namespaces: { type: string; path?: string }[] }; annotations: Record<string, string>; root: { readonly: boolean } };
    assert.deepEqual(spec.linux.namespaces.find((n) => n.type === "network"), { type: "network", path: st.info.netns });
    for (const t of ["ipc", "uts", "pid"]) assert.ok(spec.linux.namespaces.some((n) => n.type === t && !n.path), t);
    assert.equal(spec.annotations["io.containerd.runc.v2.group"], "pod1");
    assert.equal(spec.root.readonly, true);
    const rootfs = tasks.tasks.get("default/pod1")!.rootfs;
    assert.equal(rootfs[0]!.type, "bind");
    assert.deepEqual(rootfs[0]!.options, ["rbind", "ro"]);
    assert.ok(fs.existsSync(path.join(rootfs[0]!.source, "bin", "busybox")));

    assert.deepEqual((await ctl.platform(ctx, "pod1")).os, "linux");
    assert.equal((await ctl.metrics(ctx, "pod1")).id, "pod1");
    await ctl.update(ctx, "pod1", { id: "pod1", runtime: { name: "x" }, labels: { extra: "1" } }, ["labels.extra"]);

    tasks.addMember("default", "app1", "pod1");
    tasks.addMember("default", "app2", "pod1");
    tasks.ignore.set("app2", new Set([15]));
    tasks.addMember("default", "other", "another-pod");
    const waiting = ctl.wait(ctx, "pod1");
    await ctl.stop(ctx, "pod1", { timeoutSecs: 1 });
    const exit = await waiting;
    assert.equal(exit.exitStatus, 137);
    assert.equal(tasks.tasks.get("default/app1")!.status, 3);
    assert.equal(tasks.tasks.get("default/app1")!.exit!.exitStatus, 143, "SIGTERM first");
    assert.equal(tasks.tasks.get("default/app2")!.exit!.exitStatus, 137, "SIGKILL after the grace period");
    assert.equal(tasks.tasks.get("default/other")!.status, 2, "containers of other sandboxes are left alone");
    st = await ctl.status(ctx, "pod1");
    assert.equal(st.state, SandboxState.NotReady);
    assert.ok(st.exitedAt);
    assert.equal(st.info.netns, "");
    assert.ok(!pings(ip));
    assert.deepEqual(net.allocations(), []);
    assert.deepEqual(net.bridgePorts(), []);
    await ctl.stop(ctx, "pod1"); // stopping again is fine
    assert.equal((await ctl.wait(ctx, "pod1")).exitStatus, 137);

    await ctl.shutdown(ctx, "pod1");
    assert.ok(!tasks.containers.has("default/pod1") && !tasks.containers.has("default/app1") && !tasks.containers.has("default/app2"));
    assert.ok(tasks.containers.has("default/other"));
    assert.deepEqual(tasks.removedSnapshots.sort(), ["overlayfs/app1", "overlayfs/app2"]);
    await rejectsWith(ctl.status(ctx, "pod1"), ErrorCodes.NotFound);
    await store.delete(ctx, "pod1");
    assert.deepEqual(listNetns(net.netnsDir), []);

    const topics = served.events.events.slice(nEvents).map((e) => `${e.topic} ${e.type} ${JSON.stringify(e.body.sandbox_id)}`);
    assert.deepEqual(topics, [
      '/sandboxes/create containerd.events.SandboxCreate "pod1"',
      '/sandboxes/start containerd.events.SandboxStart "pod1"',
      '/sandboxes/exit containerd.events.SandboxExit "pod1"',
      '/sandboxes/exit containerd.events.SandboxExit "pod1"',
    ]);
    assert.equal(served.events.events.at(-1)!.body.exit_status, 137);
  });

  it("podsandbox - shutdown of a running sandbox stops it first; a dying pause ends Wait", async () => {
    await ctl.create(ctx, { id: "pod2", runtime: { name: "io.containerd.runc.v2" } });
    await ctl.start(ctx, "pod2");
    const w = ctl.wait(ctx, "pod2");
    tasks.exit("default", "pod2", 2);
    assert.equal((await w).exitStatus, 2);
    assert.equal((await ctl.status(ctx, "pod2")).state, SandboxState.NotReady);
    await ctl.shutdown(ctx, "pod2");
    await ctl.create(ctx, { id: "pod3", runtime: { name: "io.containerd.runc.v2" } });
    await ctl.start(ctx, "pod3");
    await ctl.shutdown(ctx, "pod3");
    await rejectsWith(ctl.status(ctx, "pod3"), ErrorCodes.NotFound);
    assert.deepEqual(net.allocations(), []);
    assert.deepEqual(listNetns(net.netnsDir), []);
  });

  it("podsandbox - a failed start leaves the sandbox created and nothing behind in the tasks process", async () => {
    await ctl.create(ctx, { id: "pod4", runtime: { name: "io.containerd.runc.v2" } });
    tasks.down = true;
    await rejectsWith(ctl.start(ctx, "pod4"), ErrorCodes.Unavailable);
    tasks.down = false;
    assert.equal((await ctl.status(ctx, "pod4")).info.phase, "created");
    await ctl.start(ctx, "pod4");
    await ctl.shutdown(ctx, "pod4");
  });

  it("podsandbox - recovery after a crash: interrupted creates undone, running sandboxes re-attached, orphans removed", async () => {
    // A running sandbox, and the tasks process restarting under it.
    await ctl.create(ctx, { id: "live", runtime: { name: "io.containerd.runc.v2" } });
    await ctl.start(ctx, "live");
    const liveIp = (await ctl.status(ctx, "live")).info.ips!;
    // An interrupted create: network made, record still "creating".
    const plan = networks.plan("default", "half", {}, "");
    const made = await networks.setup(plan, "half");
    const now = new Date();
    const halfRec: PodRecord = { phase: "creating", sandbox: toStored({ id: "half", runtime: { name: "r" }, labels: {}, extensions: {}, sandboxer: "podsandbox", createdAt: now, updatedAt: now }), network: made, annotations: {}, created: now.getTime() };
    await served.local.db.put(podKey("default", "half"), halfRec);
    // An interrupted start whose pause task did come up.
    await ctl.create(ctx, { id: "half-started", runtime: { name: "io.containerd.runc.v2" } });
    const hs = served.local.db.get(podKey("default", "half-started")) as PodRecord;
    await served.local.db.put(podKey("default", "half-started"), { ...hs, phase: "starting" });
    await tasks.createContainer(ctx, { id: "half-started", labels: {}, runtime: "r", spec: {}, sandbox: "half-started" });
    await tasks.createTask(ctx, "half-started", []);
    await tasks.startTask(ctx, "half-started");
    // An orphaned namespace.
    const orphan = path.join(net.netnsDir, "cni-orphan");
    await createNetns(orphan);
    assert.equal(net.allocations().length, 3);

    // "kill -9": the old controller stops; the tasks process is down for a moment.
    pods.close();
    tasks.crash();
    const restarted = makeController(tasks);
    await restarted.recover();
    pods = restarted;
    assert.ok(!fs.existsSync(orphan), "orphaned namespace removed");
    assert.ok(!fs.existsSync(made.netns), "half-made network removed");
    assert.equal(served.local.db.get(podKey("default", "half")), undefined);
    assert.equal(net.allocations().length, 2, "the half-made sandbox's address is released");
    setTimeout(() => (tasks.down = false), 300);
    await waitUntil("the interrupted start to settle", () => (served.local.db.get(podKey("default", "half-started")) as PodRecord).phase === "running");

    const st = await ctl.status(ctx, "live");
    assert.equal(st.state, SandboxState.Ready);
    assert.equal(st.info.ips, liveIp);
    const w = ctl.wait(ctx, "live");
    tasks.exit("default", "live", 137);
    assert.equal((await w).exitStatus, 137, "the restarted controller sees the pause exit");
    await ctl.shutdown(ctx, "live");
    await ctl.stop(ctx, "half-started");
    await ctl.shutdown(ctx, "half-started");
    assert.deepEqual(net.allocations(), []);
    assert.deepEqual(listNetns(net.netnsDir), []);
  });

  it("podsandbox - a broken CNI config fails Create with nothing left", async () => {
    const conf = path.join(net.confDir, "10-flt.conflist");
    const good = fs.readFileSync(conf, "utf8");
    fs.writeFileSync(conf, "{broken");
    try {
      await rejectsWith(ctl.create(ctx, { id: "broken", runtime: { name: "r" } }), ErrorCodes.InvalidArgument, /cni config .*invalid JSON/);
      await rejectsWith(ctl.status(ctx, "broken"), ErrorCodes.NotFound);
      const doc = JSON.parse(good) as { plugins: Record<string, unknown>[] };
      doc.plugins.push({ type: "tuning", sysctl: { "net.ipv4.conf.eth0.no_such_knob": "1" } });
      fs.writeFileSync(conf, JSON.stringify(doc));
      await rejectsWith(ctl.create(ctx, { id: "broken", runtime: { name: "r" } }), ErrorCodes.Unknown, /tuning ADD failed/);
      await rejectsWith(ctl.status(ctx, "broken"), ErrorCodes.NotFound);
      assert.deepEqual(listNetns(net.netnsDir), []);
      assert.deepEqual(net.allocations(), []);
      assert.deepEqual(net.bridgePorts(), []);
    } finally {
      fs.writeFileSync(conf, good);
    }
  });
});
