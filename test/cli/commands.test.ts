/**
 * Issue 16, operators' commands through `bin/flotilla` itself: images pull, push and export exit with
 * status 0 once done (a hang fails the test after its timeout), global options before the command in
 * ctr's spellings, a failing command's status, `ps` listing every process with pid, address, health,
 * restarts and uptime, `stop|start|restart SERVICE` against the running `up`, a SIGTERM to one service
 * stopping it for good (a SIGKILL still restarts it), and "flotilla is up" (and sd_notify READY=1 on
 * $NOTIFY_SOCKET, from up itself and not from its services) meaning the gateway serves.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { repoRoot } from "#libs/proto";
import { SERVICE_NAMES } from "#libs/config";
import { runCtr, sleep, startStack, waitFor, type Stack } from "../harness";
import { flotilla, flotillaOk, spawnFlotilla } from "../helpers/flotilla";
import { buildImage, busyboxLayer, pushImage } from "../transfer/images";
import { startRegistry, type TestRegistry } from "../transfer/registry";
import type { ProcessStatus } from "#cli/supervisor";

/**
 * Receives sd_notify datagrams on argv[1] as systemd does (SO_PASSCRED: the sender's PID), prints one
 * JSON line per message, and closes passed descriptors (which completes systemd-notify's barrier).
 */
const NOTIFY_RECEIVER = `
import array, json, os, socket, struct, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
s.bind(sys.argv[1])
while True:
    msg, anc, _, _ = s.recvmsg(4096, socket.CMSG_SPACE(12) + socket.CMSG_SPACE(64))
    pid = 0
    for _, typ, data in anc:
        if typ == socket.SCM_CREDENTIALS:
            pid = struct.unpack("iII", data[:12])[0]
        elif typ == socket.SCM_RIGHTS:
            fds = array.array("i")
            fds.frombytes(data[: len(data) - len(data) % 4])
            for fd in fds:
                os.close(fd)
    print(json.dumps({"pid": pid, "msg": msg.decode()}), flush=True)
`;

describe("cli - commands exit, global options, ps/stop/start/restart", () => {
  let stack: Stack;
  let reg: TestRegistry;
  let ref: string;
  const ps = async (): Promise<Map<string, ProcessStatus>> => {
    const r = await flotillaOk(["--config", stack.configFile, "ps", "--json"], { timeoutMs: 30_000 });
    return new Map((JSON.parse(r.stdout) as ProcessStatus[]).map((p) => [p.name, p]));
  };

  before(async () => {
    [stack, reg] = await Promise.all([startStack(), startRegistry()]);
    ref = await pushImage(reg.host, "test/busybox", "1.0", buildImage([busyboxLayer()]));
  });
  after(async () => {
    await stack?.stop();
    await reg?.stop();
  });

  it("images pull, push and export exit 0 when done, with -a/-n before the command", async () => {
    const pull = await flotilla(["-a", stack.socket, "-n", "ops", "images", "pull", ref], { timeoutMs: 60_000 });
    assert.equal(pull.code, 0, pull.stdout + pull.stderr);
    assert.match(pull.stdout, /^Completed pull from /m);
    assert.ok(pull.ms < 30_000, `pull took ${pull.ms} ms`);
    const ls = await runCtr(stack.socket, ["images", "ls", "-q"], { namespace: "ops" });
    assert.match(ls.stdout, new RegExp(`^${ref.replace(/\./g, "\\.")}$`, "m"), "pulled into the namespace given before the command");
    assert.doesNotMatch((await stack.ctr(["images", "ls", "-q"])).stdout, /test\/busybox/, "not into default");

    const pushed = `${reg.host}/test/copy:2`;
    const push = await flotilla(["--address", stack.socket, "--namespace=ops", "images", "push", pushed, ref], { timeoutMs: 60_000 });
    assert.equal(push.code, 0, push.stdout + push.stderr);
    assert.match(push.stdout, /^Completed push to /m);
    const manifest = await fetch(`http://${reg.host}/v2/test/copy/manifests/2`, { headers: { accept: "application/vnd.oci.image.manifest.v1+json,application/vnd.docker.distribution.manifest.v2+json" } });
    assert.equal(manifest.status, 200, "the pushed manifest is in the registry");

    const out = path.join(stack.dir, "export.tar");
    // global options before the command, and the same option after it wins
    const exp = await flotilla(["-n", "nope", "-a", stack.socket, "images", "export", "-n", "ops", out, ref], { timeoutMs: 60_000 });
    assert.equal(exp.code, 0, exp.stdout + exp.stderr);
    assert.ok(fs.statSync(out).size > 1024, "an archive was written");
    // and between the command and its subcommand
    const tag = await flotilla(["images", "-a", stack.socket, "--namespace", "ops", "tag", ref, "local/tagged:1"], { timeoutMs: 60_000 });
    assert.equal(tag.code, 0, tag.stdout + tag.stderr);
    assert.match((await runCtr(stack.socket, ["images", "ls", "-q"], { namespace: "ops" })).stdout, /^local\/tagged:1$/m);
  });

  it("main releases what it opened: without bin/flotilla's exit, each command's process ends by itself", async () => {
    const main = path.join(repoRoot(), "dist", "cli", "main.js");
    const script = `require(${JSON.stringify(main)}).main(process.argv.slice(1)).then((c) => { process.exitCode = c; });`;
    for (const args of [
      ["-a", stack.socket, "images", "pull", ref],
      ["-a", stack.socket, "sandbox", "ls"],
      ["-c", stack.configFile, "ps"],
      ["-c", stack.configFile, "health", "gateway"],
      ["-c", stack.configFile, "network", "ls"],
    ]) {
      const r = await new Promise<{ code: number | null; ms: number }>((resolve) => {
        const t0 = Date.now();
        const c = spawn(process.execPath, ["-e", script, "--", ...args], { stdio: "ignore" });
        const t = setTimeout(() => c.kill("SIGKILL"), 30_000);
        c.on("exit", (code) => {
          clearTimeout(t);
          resolve({ code, ms: Date.now() - t0 });
        });
      });
      assert.equal(r.code, 0, `${args.join(" ")}: exited ${r.code} after ${r.ms} ms`);
    }
  });

  it("a failing command exits non-zero, and promptly", async () => {
    const r = await flotilla(["-a", stack.socket, "images", "pull", `${reg.host}/test/none:1`], { timeoutMs: 60_000 });
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(r.stderr, /not found/);
    const bad = await flotilla(["--address"], { timeoutMs: 10_000 });
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /--address needs a value/);
    const unknown = await flotilla(["-a", stack.socket, "frobnicate"], { timeoutMs: 10_000 });
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /unknown command "frobnicate"/);
  });

  it("ps lists every process with pid, address, health, restarts and uptime", async () => {
    const table = await flotillaOk(["ps", "-c", stack.configFile], { timeoutMs: 30_000 });
    assert.match(table.stdout, /^NAME\s+PID\s+STATE\s+HEALTH\s+RESTARTS\s+UPTIME\s+ADDRESS$/m);
    const all = await ps();
    assert.deepEqual([...all.keys()].sort(), [...SERVICE_NAMES, "nats"].sort());
    for (const [name, p] of all) {
      assert.equal(p.pid, stack.pidOf(name as "nats"), `${name} pid`);
      assert.equal(p.state, "running");
      assert.equal(p.health, name === "nats" ? "-" : "SERVING", name);
      assert.equal(p.restarts, 0);
      assert.ok(p.uptime !== null && p.uptime >= 0);
      assert.match(table.stdout, new RegExp(`^${name}\\s+${p.pid}\\s+running\\s`, "m"));
    }
    assert.equal(all.get("gateway")!.address, stack.socket);
    // a second up on the same state directory is refused before it starts anything
    const second = await flotilla(["up", "--config", stack.configFile], { timeoutMs: 30_000 });
    assert.equal(second.code, 1);
    assert.match(second.stderr, /another flotilla up is running/);
    assert.deepEqual([...(await ps()).values()].map((p) => [p.name, p.pid, p.health]), [...all.values()].map((p) => [p.name, p.pid, p.health]));
  });

  it("stop, start and restart one service of a running up", async () => {
    const before = (await ps()).get("transfer")!;
    await flotillaOk(["-c", stack.configFile, "stop", "transfer"], { timeoutMs: 30_000 });
    assert.throws(() => process.kill(before.pid!, 0), "the process is gone");
    await sleep(1500); // longer than the first restart backoff
    let p = (await ps()).get("transfer")!;
    assert.deepEqual([p.state, p.pid, p.health], ["stopped", null, "DOWN"]);
    // the rest of the stack answers; the stopped service's calls fail
    assert.equal((await stack.ctr(["version"])).code, 0);
    const down = await flotilla(["-c", stack.configFile, "health", "gateway", "transfer"], { timeoutMs: 30_000 });
    assert.equal(down.code, 1);
    assert.equal(down.stdout, "gateway SERVING\ntransfer DOWN\n");
    await flotillaOk(["-c", stack.configFile, "start", "transfer"], { timeoutMs: 60_000 });
    p = (await ps()).get("transfer")!;
    assert.equal(p.state, "running");
    assert.equal(p.health, "SERVING");
    assert.notEqual(p.pid, before.pid);
    assert.equal((await flotillaOk(["health", "-c", stack.configFile, "transfer"], { timeoutMs: 30_000 })).stdout, "transfer SERVING\n");
    await flotillaOk(["-c", stack.configFile, "restart", "transfer"], { timeoutMs: 60_000 });
    const after = (await ps()).get("transfer")!;
    assert.notEqual(after.pid, p.pid);
    assert.equal(after.health, "SERVING");
    assert.equal(after.restarts, 0, "operator stops are not crashes");
    const unknown = await flotilla(["-c", stack.configFile, "stop", "nosuch"], { timeoutMs: 30_000 });
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /service "nosuch": not found/);
  });

  it("a SIGTERM to one service stops it for good; a SIGKILL is a crash and restarts it", async () => {
    const pid = stack.kill("sandbox", "SIGTERM");
    await waitFor("sandbox to stop", async () => ((await ps()).get("sandbox")!.state === "stopped" ? true : undefined), 20_000, 200);
    await sleep(1500);
    const p = (await ps()).get("sandbox")!;
    assert.deepEqual([p.state, p.pid, p.restarts], ["stopped", null, 0]);
    assert.throws(() => process.kill(pid, 0));
    await flotillaOk(["-c", stack.configFile, "start", "sandbox"], { timeoutMs: 60_000 });
    const old = stack.kill("sandbox", "SIGKILL");
    const fresh = await stack.waitRestarted("sandbox", old);
    const q = (await ps()).get("sandbox")!;
    assert.equal(q.pid, fresh);
    assert.equal(q.restarts, 1);
  });

  it("flotilla is up only once the gateway answers calls; stop is clean", async () => {
    const dir = fs.mkdtempSync(path.join(stack.dir, "up-"));
    const cfg = path.join(dir, "config.toml");
    const sock = path.join(dir, "f.sock");
    fs.writeFileSync(cfg, fs.readFileSync(stack.configFile, "utf8")
      .replace(/^root = .*$/m, `root = ${JSON.stringify(path.join(dir, "root"))}`)
      .replace(/^state = .*$/m, `state = ${JSON.stringify(path.join(dir, "state"))}`)
      .replace(/^address = .*$/m, `address = ${JSON.stringify(sock)}`));
    // systemd's side of sd_notify: a unix datagram socket reporting each message and its sender's PID
    const notifySocket = path.join(dir, "notify.sock");
    const receiver = spawn("python3", ["-u", "-c", NOTIFY_RECEIVER, notifySocket], { stdio: ["ignore", "pipe", "inherit"] });
    const notes: { pid: number; msg: string }[] = [];
    receiver.stdout!.setEncoding("utf8");
    receiver.stdout!.on("data", (d: string) => notes.push(...d.split("\n").filter(Boolean).map((l) => JSON.parse(l) as { pid: number; msg: string })));
    await waitFor("the notify socket", () => fs.existsSync(notifySocket) || undefined);
    const started = Date.now();
    const up = spawnFlotilla(["up", "--config", cfg], { stdio: ["ignore", "ignore", "pipe"], env: { NOTIFY_SOCKET: notifySocket } });
    let log = "";
    try {
      const ready = await new Promise<number>((resolve, reject) => {
        up.stderr!.on("data", (b: Buffer) => {
          log += b;
          if (log.includes('"msg":"flotilla is up"')) resolve(Date.now());
        });
        up.once("exit", (code) => reject(new Error(`up exited ${code}\n${log}`)));
        setTimeout(() => reject(new Error(`no "flotilla is up" after 90 s\n${log}`)), 90_000).unref();
      });
      // at that moment the gateway answers, and every service with it
      const v = await runCtr(sock, ["version"], { timeoutMs: 10_000 });
      assert.equal(v.code, 0, v.stderr);
      const plugins = await runCtr(sock, ["plugins", "ls"], { timeoutMs: 10_000 });
      assert.doesNotMatch(plugins.stdout, /\berror\b/, plugins.stdout);
      const gwServing = log.split("\n").filter((l) => l.includes('"msg":"serving"')).length;
      assert.equal(gwServing, SERVICE_NAMES.length, "every service logged serving before up");
      // READY=1 reached the notify socket from up's own PID, and from no service
      const readyNote = await waitFor("READY=1", () => notes.find((n) => n.msg.split("\n").includes("READY=1")));
      assert.equal(readyNote.pid, up.pid);
      assert.deepEqual(notes.filter((n) => n.msg.includes("READY=1")).length, 1, JSON.stringify(notes));
      const stopAt = Date.now();
      const exited = new Promise<number | null>((r) => up.once("exit", (c) => r(c)));
      up.kill("SIGTERM");
      const code = await exited;
      assert.equal(code, 0);
      process.stdout.write(`# up: ready after ${ready - started} ms, stopped ${Date.now() - stopAt} ms after SIGTERM\n`);
    } finally {
      receiver.kill("SIGKILL");
      if (up.exitCode === null && up.signalCode === null) up.kill("SIGKILL");
      const st = path.join(dir, "state", "supervisor.json");
      if (fs.existsSync(st)) {
        for (const pid of Object.values((JSON.parse(fs.readFileSync(st, "utf8")) as { services: Record<string, number | null> }).services)) {
          try {
            if (pid) process.kill(pid, "SIGKILL");
          } catch {
            /* gone */
          }
        }
      }
    }
  });
});
