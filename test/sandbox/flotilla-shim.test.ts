/**
 * The sandbox service's `shim` sandboxer driving Flotilla's own shim (services/shim) end to end with
 * real runc: the runtime v2 `start`, the shim-level containerd.runtime.sandbox.v1.Sandbox API, a
 * sandbox process holding the pod's namespaces, containers of the pod served by the same shim (task API
 * at the address Start returned) joining them, Stop stopping them, Shutdown leaving nothing behind.
 */
import * as assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { after, before, describe, it } from "node:test";
import { background } from "#libs/context";
import { ErrorCodes } from "#libs/errdefs";
import { createLogger } from "#libs/log";
import { repoRoot } from "#libs/proto";
import { NAMESPACE_KEY, TtrpcClient, TtrpcServer } from "#libs/ttrpc";
import { TypedClient, typedService } from "#libs/ttrpc/typed";
import { SandboxControllerProxy } from "#libs/clients/sandbox";
import { ShimSandboxController, shimKey, type ShimRecord } from "#services/sandbox/src/local/shim/controller";
import { shimBinaryName } from "#services/sandbox/src/local/shim/launcher";
import { DEFAULT_NODE_OPTIONS } from "#services/tasks/src/runtime/runtimes";
import { goArch } from "#services/shim/src/sandbox";
import { busyboxRootfs, runcContainers, deleteRuncContainers, alive, mountsBelow } from "../tasks/helpers";
import { serveSandbox, type ServedSandbox } from "./fixtures";
import { rejectsWith } from "./store-suite";
import { testChannels } from "../harness";

const log = createLogger("flotilla-shim-sandbox-test", "silent");
const RUNTIME = "io.containerd.flotilla.v2";
const OCI_SPEC = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
const EVENTS = "containerd.services.events.ttrpc.v1.Events";

const ppid = (pid: number): number => Number(/PPid:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? 0);
const nsLink = (pid: number | "self", kind: string): string => fs.readlinkSync(`/proc/${pid}/ns/${kind}`);

async function until(what: string, fn: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!fn()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A container spec joining the sandbox process's namespaces (what a pod member's spec does). */
function memberSpec(sandboxPid: number, args: string[]): Record<string, unknown> {
  return {
    ociVersion: "1.0.2-dev",
    process: { terminal: false, user: { uid: 0, gid: 0 }, args, env: ["PATH=/bin"], cwd: "/", noNewPrivileges: true },
    root: { path: "rootfs", readonly: false },
    mounts: [
      { destination: "/proc", type: "proc", source: "proc", options: ["nosuid", "noexec", "nodev"] },
      { destination: "/dev", type: "tmpfs", source: "tmpfs", options: ["nosuid", "strictatime", "mode=755", "size=65536k"] },
    ],
    annotations: { "io.kubernetes.cri.sandbox-id": "pod1" },
    linux: {
      namespaces: [
        { type: "pid", path: `/proc/${sandboxPid}/ns/pid` },
        { type: "ipc", path: `/proc/${sandboxPid}/ns/ipc` },
        { type: "uts", path: `/proc/${sandboxPid}/ns/uts` },
        { type: "network", path: `/proc/${sandboxPid}/ns/net` },
        { type: "mount" },
      ],
    },
  };
}

describe("shim sandboxer with Flotilla's shim (real runc)", () => {
  let dir: string;
  let served: ServedSandbox;
  let shims: ShimSandboxController;
  let ctl: SandboxControllerProxy;
  let events: TtrpcServer;
  let netns: string;
  const forwarded: string[] = [];
  const runcRoot = (): string => path.join(dir, "runc");
  const ctx = background("default");

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "flt-fshim-"));
    fs.mkdirSync(path.join(dir, "bin"));
    const main = path.join(repoRoot(), "dist", "services", "shim", "main.js");
    const env = `FLOTILLA_RUNC_ROOT=${JSON.stringify(path.join(dir, "runc"))} FLOTILLA_SHIM_SOCKET_DIR=${JSON.stringify(path.join(dir, "s"))}`;
    fs.writeFileSync(path.join(dir, "bin", shimBinaryName(RUNTIME)), `#!/bin/sh\nexport ${env}\nexec ${JSON.stringify(process.execPath)} ${DEFAULT_NODE_OPTIONS.join(" ")} ${JSON.stringify(main)} "$@"\n`, { mode: 0o755 });
    // The daemon's ttrpc events socket: the shim forwards its task events here.
    events = new TtrpcServer();
    events.register(EVENTS, typedService(EVENTS, {
      Forward: async (_c, req) => {
        forwarded.push(String((req.envelope as { topic: string }).topic));
        return {};
      },
    }));
    await events.listen(path.join(dir, "daemon.sock.ttrpc"));
    // A pinned network namespace standing in for the pod's (CNI is the podsandbox tests' business).
    netns = path.join(dir, "netns");
    fs.writeFileSync(netns, "");
    assert.equal(spawnSync("unshare", [`--net=${netns}`, "true"]).status, 0, "unshare --net");
    let current: ShimSandboxController | undefined;
    served = await serveSandbox({
      shim: {
        create: (...a) => current!.create(...a),
        start: (...a) => current!.start(...a),
        platform: (...a) => current!.platform(...a),
        stop: (...a) => current!.stop(...a),
        wait: (...a) => current!.wait(...a),
        status: (...a) => current!.status(...a),
        shutdown: (...a) => current!.shutdown(...a),
        metrics: (...a) => current!.metrics(...a),
        update: (...a) => current!.update(...a),
      },
    });
    shims = current = new ShimSandboxController({
      db: served.local.db,
      state: path.join(dir, "state"),
      shimDirs: [path.join(dir, "bin")],
      grpcAddress: path.join(dir, "daemon.sock"),
      ttrpcAddress: path.join(dir, "daemon.sock.ttrpc"),
      log,
    });
    ctl = new SandboxControllerProxy(testChannels.get(served.address), "shim");
  });

  after(async () => {
    shims.close();
    await served.close();
    await events.close();
    testChannels.close();
    deleteRuncContainers([runcRoot()]);
    for (const m of mountsBelow(dir).sort((a, b) => b.length - a.length)) spawnSync("umount", ["-l", m]);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("flotilla shim sandbox - create, start, the pod's namespaces, a member container, status, platform, metrics, stop, wait, shutdown", async () => {
    const n = served.events.events.length;
    await ctl.create(ctx, { id: "pod1", runtime: { name: RUNTIME }, labels: { app: "web" }, spec: { typeUrl: OCI_SPEC, value: Buffer.from('{"hostname":"pod1-host"}') } }, { netnsPath: netns, annotations: { team: "a" } });
    const rec = served.local.db.get(shimKey("default", "pod1")) as ShimRecord;
    assert.deepEqual(runcContainers(runcRoot()).map((c) => [c.id, c.status]), [["pod1", "created"]]);
    assert.equal((await ctl.status(ctx, "pod1")).state, "SANDBOX_NOTREADY", "created, not started");

    const inst = await ctl.start(ctx, "pod1");
    assert.ok(inst.pid > 0 && alive(inst.pid));
    const shimPid = ppid(inst.pid);
    assert.ok(shimPid > 0 && alive(shimPid), "the shim is the sandbox process's reaper");
    assert.match(inst.address, /^ttrpc\+unix:\/\//);
    assert.equal(inst.version, 3);
    assert.deepEqual(inst.labels, { app: "web" });
    assert.equal(inst.spec?.typeUrl, OCI_SPEC);
    const spec = JSON.parse(Buffer.from(inst.spec!.value).toString()) as { hostname: string; annotations: Record<string, string> };
    assert.equal(spec.hostname, "pod1-host");
    assert.equal(spec.annotations.team, "a");
    await rejectsWith(ctl.start(ctx, "pod1"), ErrorCodes.FailedPrecondition);

    // The sandbox process holds the pod's namespaces: the given netns, new pid/ipc/uts ones.
    assert.equal(nsLink(inst.pid, "net"), `net:[${fs.statSync(netns).ino}]`);
    for (const k of ["pid", "ipc", "uts", "mnt"]) assert.notEqual(nsLink(inst.pid, k), nsLink("self", k), `${k} namespace of its own`);
    assert.equal(spawnSync("nsenter", ["-t", String(inst.pid), "-u", "hostname"], { encoding: "utf8" }).stdout.trim(), "pod1-host");

    const st = await ctl.status(ctx, "pod1", true);
    assert.equal(st.state, "SANDBOX_READY");
    assert.equal(st.pid, inst.pid);
    assert.equal(st.address, inst.address);
    assert.equal(st.info.netns, netns);
    assert.equal(st.info.status, "running");
    assert.ok(st.createdAt && st.createdAt.getTime() > 0);
    assert.deepEqual(await ctl.platform(ctx, "pod1"), { os: "linux", architecture: goArch(), variant: process.arch === "arm64" ? "v8" : "" });
    const m = await ctl.metrics(ctx, "pod1");
    assert.equal(m.id, "pod1");
    assert.match(m.data?.typeUrl ?? "", /^io\.containerd\.cgroups\.v[12]\.Metrics$/);

    // Containers of the pod go to the same shim (the task API at the address Start returned) and join
    // the sandbox's namespaces.
    const client = await TtrpcClient.connect(inst.address.replace(/^ttrpc\+/, ""));
    const task = new TypedClient(client, "containerd.task.v3.Task");
    const md = { metadata: { [NAMESPACE_KEY]: ["default"] } };
    const rootfs = busyboxRootfs(path.join(dir, "busybox"));
    const member = async (id: string, args: string[]): Promise<{ bundle: string; out: string }> => {
      const bundle = path.join(dir, "tasks", id);
      fs.mkdirSync(path.join(bundle, "rootfs"), { recursive: true });
      fs.writeFileSync(path.join(bundle, "config.json"), JSON.stringify(memberSpec(inst.pid, args)));
      const out = path.join(dir, `${id}.out`);
      await task.call("Create", { id, bundle, rootfs: [{ type: "bind", source: rootfs, options: ["rbind", "rw"] }], stdout: out, stderr: out }, md);
      await task.call("Start", { id }, md);
      return { bundle, out };
    };
    const probe = await member("probe", ["sh", "-c", "hostname; readlink /proc/self/ns/net; readlink /proc/self/ns/ipc"]);
    const pe = await task.call("Wait", { id: "probe" }, md);
    assert.equal(pe.exit_status, 0, fs.readFileSync(probe.out, "utf8"));
    assert.deepEqual(fs.readFileSync(probe.out, "utf8").trim().split("\n"), ["pod1-host", nsLink(inst.pid, "net"), nsLink(inst.pid, "ipc")]);
    await task.call("Delete", { id: "probe" }, md);

    // Stop stops the pod's containers, then the sandbox process; Wait sees the sandbox's exit.
    await member("app", ["sleep", "1000"]);
    const appExit = task.call("Wait", { id: "app" }, md);
    const waiting = ctl.wait(ctx, "pod1");
    await ctl.stop(ctx, "pod1", { timeoutSecs: 1 });
    assert.equal((await appExit).exit_status, 137);
    assert.equal((await waiting).exitStatus, 137, "the sleeping sandbox process ignores SIGTERM as PID 1, SIGKILL ends it");
    assert.ok(!alive(inst.pid));
    const stopped = await ctl.status(ctx, "pod1");
    assert.equal(stopped.state, "SANDBOX_NOTREADY");
    assert.ok(stopped.exitedAt && stopped.exitedAt.getTime() > 0);
    await task.call("Delete", { id: "app" }, md);
    client.close();

    await ctl.shutdown(ctx, "pod1");
    assert.ok(!fs.existsSync(rec.bundle), "bundle removed");
    await until("the shim to exit", () => !fs.existsSync(rec.endpoint!.address.replace("unix://", "")));
    await until("the shim process to end", () => !alive(shimPid));
    assert.deepEqual(runcContainers(runcRoot()), [], "no runc state left");
    assert.deepEqual(mountsBelow(path.join(dir, "state")), [], "nothing mounted");
    await rejectsWith(ctl.status(ctx, "pod1"), ErrorCodes.NotFound);
    assert.deepEqual(served.events.events.slice(n).map((e) => e.topic), ["/sandboxes/create", "/sandboxes/start", "/sandboxes/exit"]);
    for (const t of ["/tasks/create", "/tasks/start", "/tasks/exit", "/tasks/delete"]) assert.ok(forwarded.includes(t), `the shim forwarded ${t}`);
  });

  it("flotilla shim sandbox - host network, shut down without ever starting: nothing left", async () => {
    await ctl.create(ctx, { id: "pod2", runtime: { name: RUNTIME } });
    const rec = served.local.db.get(shimKey("default", "pod2")) as ShimRecord;
    assert.deepEqual(runcContainers(runcRoot()).map((c) => c.id), ["pod2"]);
    const st = await ctl.status(ctx, "pod2", true);
    assert.equal(st.state, "SANDBOX_NOTREADY");
    assert.equal(st.info.status, "created");
    // No network namespace given: the sandbox process shares the host's (and its hostname).
    assert.equal(nsLink(st.pid, "net"), nsLink("self", "net"));
    assert.equal(nsLink(st.pid, "uts"), nsLink("self", "uts"));
    await ctl.shutdown(ctx, "pod2");
    assert.ok(!fs.existsSync(rec.bundle));
    assert.ok(!alive(st.pid));
    assert.deepEqual(runcContainers(runcRoot()), []);
    await until("the shim to exit", () => !fs.existsSync(rec.endpoint!.address.replace("unix://", "")));
  });

  it("flotilla shim sandbox - a shim killed mid-life is cleaned up by shutdown (`shim delete` removes the sandbox process)", async () => {
    await ctl.create(ctx, { id: "pod3", runtime: { name: RUNTIME } });
    const inst = await ctl.start(ctx, "pod3");
    const shimPid = ppid(inst.pid);
    assert.ok(shimPid > 0 && alive(shimPid));
    process.kill(shimPid, "SIGKILL");
    await until("the shim to die", () => !alive(shimPid));
    await ctl.shutdown(ctx, "pod3");
    await until("the sandbox process to be gone", () => !alive(inst.pid));
    assert.deepEqual(runcContainers(runcRoot()), []);
    await rejectsWith(ctl.status(ctx, "pod3"), ErrorCodes.NotFound);
  });
});
