/**
 * The `shim` controller through the Controller gRPC API, driving a stand-in shim (test/sandbox/fake-shim.ts)
 * over the runtime v2 binary protocol and the shim-level containerd.runtime.sandbox.v1.Sandbox ttrpc API.
 */
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { after, before, describe, it } from "node:test";
import { background } from "#libs/context";
import { ErrorCodes } from "#libs/errdefs";
import { createLogger } from "#libs/log";
import { SandboxControllerProxy } from "#libs/clients/sandbox";
import type { SandboxController } from "#libs/core/sandbox";
import { ShimSandboxController, shimKey, type ShimRecord } from "#services/sandbox/src/local/shim/controller";
import { parseStartOutput, shimBinaryName } from "#services/sandbox/src/local/shim/launcher";
import { encode } from "#libs/proto";
import { serveSandbox, type ServedSandbox } from "./fixtures";
import { rejectsWith } from "./store-suite";
import { testChannels } from "../harness";

const log = createLogger("shim-test", "silent");
const RUNTIME = "io.containerd.flttest.v1";

/** True while `pid` runs (a zombie, which no one may reap in a container, counts as gone). */
const alive = (pid: number): boolean => {
  try {
    return !/^\d+ \(.*\) [ZX]/.test(fs.readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return false;
  }
};

describe("shim sandboxer", () => {
  let dir: string;
  let served: ServedSandbox;
  let shims: ShimSandboxController;
  let ctl: SandboxControllerProxy;
  const ctx = background("default");
  const make = (): ShimSandboxController =>
    new ShimSandboxController({ db: served.local.db, state: path.join(dir, "state"), shimDirs: [path.join(dir, "bin")], grpcAddress: path.join(dir, "daemon.sock"), ttrpcAddress: path.join(dir, "daemon.sock.ttrpc"), log });

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "flt-shim-"));
    fs.mkdirSync(path.join(dir, "bin"));
    const wrapper = path.join(dir, "bin", shimBinaryName(RUNTIME));
    fs.writeFileSync(wrapper, `#!/bin/sh\nexec ${JSON.stringify(process.execPath)} ${JSON.stringify(path.join(__dirname, "fake-shim.js"))} "$@"\n`, { mode: 0o755 });
    const current: SandboxController = {
      create: (...a) => shims.create(...a),
      start: (...a) => shims.start(...a),
      platform: (...a) => shims.platform(...a),
      stop: (...a) => shims.stop(...a),
      wait: (...a) => shims.wait(...a),
      status: (...a) => shims.status(...a),
      shutdown: (...a) => shims.shutdown(...a),
      metrics: (...a) => shims.metrics(...a),
      update: (...a) => shims.update(...a),
    };
    served = await serveSandbox({ shim: current });
    shims = make();
    ctl = new SandboxControllerProxy(testChannels.get(served.address), "shim");
  });
  after(async () => {
    shims.close();
    await served.close();
    testChannels.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("shim sandboxer - binary names and start output as containerd parses them", () => {
    assert.equal(shimBinaryName("io.containerd.runc.v2"), "containerd-shim-runc-v2");
    assert.equal(shimBinaryName("/opt/x/shim"), "/opt/x/shim");
    assert.throws(() => shimBinaryName("rel/path"), (e: { code?: string }) => e.code === ErrorCodes.InvalidArgument);
    assert.deepEqual(parseStartOutput(Buffer.from("unix:///run/s/abc\n")), { address: "unix:///run/s/abc", protocol: "ttrpc", version: 2 });
    assert.deepEqual(parseStartOutput(Buffer.from('{"version":3,"address":"unix:///x","protocol":"grpc"}')), { address: "unix:///x", protocol: "grpc", version: 3 });
    const pb = encode("containerd.runtime.bootstrap.v1.BootstrapResult", { version: 3, address: "unix:///pb", protocol: "ttrpc" });
    assert.deepEqual(parseStartOutput(pb), { address: "unix:///pb", protocol: "ttrpc", version: 3 });
    assert.throws(() => parseStartOutput(Buffer.from('{"version":4,"address":"unix:///x"}')), (e: { code?: string }) => e.code === ErrorCodes.NotImplemented);
  });

  it("shim sandboxer - create, start, status, platform, metrics, stop, wait, shutdown, with events", async () => {
    const n = served.events.events.length;
    await ctl.create(ctx, { id: "vm1", runtime: { name: RUNTIME }, labels: { kind: "vm" }, spec: { typeUrl: "types.containerd.io/opencontainers/runtime-spec/1/Spec", value: Buffer.from('{"hostname":"vm1"}') } }, { netnsPath: "/var/run/netns/x", annotations: { a: "b" } });
    const rec = served.local.db.get(shimKey("default", "vm1")) as ShimRecord;
    assert.equal(fs.readFileSync(path.join(rec.bundle, "config.json"), "utf8"), '{"hostname":"vm1"}');
    await rejectsWith(ctl.create(ctx, { id: "vm1", runtime: { name: RUNTIME } }), ErrorCodes.AlreadyExists);
    const inst = await ctl.start(ctx, "vm1");
    assert.ok(inst.pid > 0 && alive(inst.pid));
    assert.match(inst.address, /^ttrpc\+unix:\/\//);
    assert.equal(inst.version, 3);
    assert.deepEqual(inst.labels, { kind: "vm" });
    const st = await ctl.status(ctx, "vm1", true);
    assert.equal(st.state, "SANDBOX_READY");
    assert.equal(st.pid, inst.pid);
    assert.equal(st.info.fake, "yes");
    assert.equal(st.info.verbose, "true");
    assert.equal(st.address, inst.address);
    assert.equal((await ctl.platform(ctx, "vm1")).architecture, "fake64");
    const m = await ctl.metrics(ctx, "vm1");
    assert.equal(m.id, "vm1");
    assert.equal(m.data?.typeUrl, "fake.Metrics");
    await ctl.update(ctx, "vm1", { id: "vm1", runtime: { name: RUNTIME }, labels: { more: "1" } }, ["labels.more"]);
    const waiting = ctl.wait(ctx, "vm1");
    await ctl.stop(ctx, "vm1");
    assert.equal((await waiting).exitStatus, 137);
    assert.ok(!alive(inst.pid));
    assert.equal((await ctl.status(ctx, "vm1")).state, "SANDBOX_NOTREADY");
    await ctl.shutdown(ctx, "vm1");
    assert.ok(!fs.existsSync(rec.bundle), "bundle removed");
    assert.ok(!fs.existsSync(rec.endpoint!.address.replace("unix://", "")), "the shim is gone");
    await rejectsWith(ctl.status(ctx, "vm1"), ErrorCodes.NotFound);
    assert.deepEqual(served.events.events.slice(n).map((e) => e.topic), ["/sandboxes/create", "/sandboxes/start", "/sandboxes/exit"]);
  });

  it("shim sandboxer - an unknown runtime binary is NotFound with nothing left", async () => {
    await rejectsWith(ctl.create(ctx, { id: "nobin", runtime: { name: "io.containerd.nosuch.v9" } }), ErrorCodes.NotFound, /containerd-shim-nosuch-v9/);
    await rejectsWith(ctl.status(ctx, "nobin"), ErrorCodes.NotFound);
    assert.ok(!fs.existsSync(path.join(dir, "state", "default", "nobin")));
  });

  it("shim sandboxer - after a restart the shim is reached again; interrupted creates are cleaned up", async () => {
    await ctl.create(ctx, { id: "vm2", runtime: { name: RUNTIME } });
    const inst = await ctl.start(ctx, "vm2");
    // An interrupted create: the shim was started, the record still says "creating".
    await ctl.create(ctx, { id: "vm3", runtime: { name: RUNTIME } });
    const r3 = served.local.db.get(shimKey("default", "vm3")) as ShimRecord;
    await served.local.db.put(shimKey("default", "vm3"), { ...r3, phase: "creating" });
    const shimPid = Number(fs.readFileSync(path.join(r3.bundle, "shim.pid"), "utf8"));
    assert.ok(alive(shimPid));

    shims.close();
    shims = make();
    await shims.recover();
    assert.equal(served.local.db.get(shimKey("default", "vm3")), undefined);
    assert.ok(!fs.existsSync(r3.bundle));
    for (let i = 0; i < 100 && alive(shimPid); i++) await new Promise((r) => setTimeout(r, 20));
    assert.ok(!alive(shimPid), "the interrupted create's shim was deleted");

    const st = await ctl.status(ctx, "vm2");
    assert.equal(st.state, "SANDBOX_READY");
    assert.equal(st.pid, inst.pid);
    await ctl.shutdown(ctx, "vm2");
    for (let i = 0; i < 100 && alive(inst.pid); i++) await new Promise((r) => setTimeout(r, 20));
    assert.ok(!alive(inst.pid));
  });
});
