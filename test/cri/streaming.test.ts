/**
 * CRI streaming through the doors users use: real `crictl` (cri-tools v1.26, from the conformance kit)
 * against `bin/flotilla up` with the CRI table appended. A busybox container runs in k8s.io with the
 * CRI's kind label; crictl exec (output, stderr, exit code, stdin, a terminal under `script`), exec
 * --sync (with a timeout that kills), the errors for a missing or stopped container, a websocket exec
 * on a URL the Exec RPC handed out, crictl port-forward into a pod's network namespace, and that no
 * exec process or FIFO is left behind.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as net from "node:net";
import * as path from "node:path";
import { background } from "#libs/context";
import { CriClient } from "#libs/clients/cri";
import { freePort } from "#cli/supervisor";
import { runCommand, testChannels, waitFor } from "../harness";
import { startRegistry, type Registry } from "../helpers/registry";
import { buildBusyboxImage, pushImage } from "../helpers/image";
import { stopStackAndCleanup, waitTaskStatus } from "../tasks/helpers";
import { crictlPath, podConfig, startCriStack, type CriStack } from "./helpers";

const ID = "cri-stream-1";

describe("cri - streaming (crictl exec, exec --sync, port-forward, websocket exec)", () => {
  let stack: CriStack;
  let reg: Registry;
  let crictl: CriStack["crictl"];

  before(async () => {
    reg = await startRegistry();
    await pushImage(reg, "test/busybox", "latest", buildBusyboxImage({ applets: ["sh", "cat", "echo", "sleep", "ls", "tty", "stty", "env", "pgrep", "ps", "true"] }));
    stack = await startCriStack();
    crictl = stack.crictl;
    const ref = `${reg.host}/test/busybox:latest`;
    const pull = await stack.ctr(["images", "pull", "--plain-http", ref], { namespace: "k8s.io", timeoutMs: 120000 });
    assert.equal(pull.code, 0, pull.stderr);
    const run = await stack.ctr(["run", "-d", "--label", "io.cri-containerd.kind=container", ref, ID, "sleep", "1000"], { namespace: "k8s.io" });
    assert.equal(run.code, 0, run.stderr);
    await waitTaskStatus(stack, ID, "RUNNING", "k8s.io");
  });

  after(async () => {
    if (stack) {
      await stack.ctr(["tasks", "kill", "-s", "SIGKILL", ID], { namespace: "k8s.io" }).catch(() => undefined);
      await stack.ctr(["tasks", "delete", "-f", ID], { namespace: "k8s.io" }).catch(() => undefined);
      await stack.ctr(["containers", "rm", ID], { namespace: "k8s.io" }).catch(() => undefined);
    }
    await stopStackAndCleanup(stack);
    await reg?.stop();
  });

  test("crictl exec: stdout, stderr and the exit code of the command", async () => {
    const ok = await crictl(["exec", ID, "echo", "hello", "world"]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(ok.stdout, "hello world\n");
    const bad = await crictl(["exec", ID, "sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert.equal(bad.stdout, "out\n");
    assert.match(bad.stderr, /^err$/m);
    assert.match(bad.stderr, /command terminated with exit code 3/);
    assert.equal(bad.code, 1);
  });

  test("crictl exec -i: stdin reaches the command, and its end closes the command's stdin", async () => {
    const r = await crictl(["exec", "-i", ID, "sh", "-c", "cat; echo after-eof"], { input: "line one\nline two\n" });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "line one\nline two\nafter-eof\n");
  });

  test("crictl exec -it under a pseudo-terminal: a tty, TERM=xterm, the terminal's size", async () => {
    const cmd = `${crictlPath()} -r unix://${stack.socket} exec -it ${ID} sh -c 'tty; echo TERM=$TERM; sleep 1; stty size; exit 5'`;
    const r = await runCommand("script", ["-qec", `stty cols 91 rows 33; ${cmd}`, "/dev/null"], { input: "" });
    assert.match(r.stdout, /\/dev\/pts\/\d+/);
    assert.match(r.stdout, /TERM=xterm/);
    assert.match(r.stdout, /33 91/);
    assert.match(r.stdout, /command terminated with exit code 5/);
  });

  test("crictl exec --sync: output, exit code, and a timeout that kills the command", async () => {
    const r = await crictl(["exec", "--sync", ID, "sh", "-c", "echo synced; echo oops >&2"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^synced$/m);
    const direct = await new CriClient(testChannels.get(stack.socket)).runtime.unary(background(), "ExecSync", { container_id: ID, cmd: ["sh", "-c", "echo synced; echo oops >&2; exit 4"], timeout: 0 });
    assert.deepEqual([direct.stdout.toString(), direct.stderr.toString(), direct.exit_code], ["synced\n", "oops\n", 4]);
    // crictl 1.26 reports a non-zero exit with the command's stderr.
    const bad = await crictl(["exec", "--sync", ID, "sh", "-c", "echo synced; echo oops >&2; exit 4"]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /command 'sh -c echo synced; echo oops >&2; exit 4' exited with 4: oops/);
    const started = Date.now();
    const t = await crictl(["exec", "--sync", "--timeout", "1", ID, "sleep", "4321"]);
    assert.notEqual(t.code, 0);
    assert.match(t.stderr, /timeout 1s exceeded/);
    assert.ok(Date.now() - started < 15000);
    const left = await crictl(["exec", "--sync", ID, "sh", "-c", "ps -o args | grep -c '^sleep 4321' || true"]);
    assert.equal(left.stdout.trim(), "0", "the timed-out command was killed");
  });

  test("errors: a missing container, a stopped one, tty with stderr", async () => {
    const missing = await crictl(["exec", "--sync", "no-such-container", "true"]);
    assert.notEqual(missing.code, 0);
    assert.match(missing.stderr, /NotFound/);
    const cri = new CriClient(testChannels.get(stack.socket));
    await assert.rejects(
      cri.runtime.unary(background(), "Exec", { container_id: ID, cmd: ["true"], tty: true, stderr: true, stdout: true, stdin: false }),
      /tty and stderr cannot both be true/,
    );
    await assert.rejects(cri.runtime.unary(background(), "Exec", { container_id: ID, cmd: [], tty: false, stderr: false, stdout: true, stdin: false }), /missing required cmd/);
    const stopped = "cri-stream-stopped";
    const ref = `${reg.host}/test/busybox:latest`;
    assert.equal((await stack.ctr(["run", "-d", "--label", "io.cri-containerd.kind=container", ref, stopped, "true"], { namespace: "k8s.io" })).code, 0);
    try {
      await waitTaskStatus(stack, stopped, "STOPPED", "k8s.io");
      const r = await crictl(["exec", stopped, "true"]);
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, /container is in CONTAINER_EXITED state/);
    } finally {
      await stack.ctr(["tasks", "delete", stopped], { namespace: "k8s.io" });
      await stack.ctr(["containers", "rm", stopped], { namespace: "k8s.io" });
    }
  });

  test("a websocket exec (v4.channel.k8s.io) on the URL of the Exec RPC; tokens are single use", async () => {
    const cri = new CriClient(testChannels.get(stack.socket));
    const { url } = await cri.runtime.unary(background(), "Exec", { container_id: ID, cmd: ["sh", "-c", "read x; echo got $x; echo warn >&2; exit 2"], tty: false, stdin: true, stdout: true, stderr: true });
    assert.match(url, /^http:\/\/127\.0\.0\.1:\d+\/exec\/[A-Za-z0-9_-]+$/);
    const got = await websocketExec(url, Buffer.from("\x00ping\n"));
    assert.equal(got.get(1)?.toString(), "got ping\n");
    assert.equal(got.get(2)?.toString(), "warn\n");
    const status = JSON.parse(got.get(3)!.toString()) as { status: string; reason: string; details: { causes: { reason: string; message: string }[] } };
    assert.equal(status.status, "Failure");
    assert.equal(status.reason, "NonZeroExitCode");
    assert.deepEqual(status.details.causes, [{ reason: "ExitCode", message: "2" }]);
    const again = await fetch(url, { method: "POST" });
    assert.equal(again.status, 404, "a token is used once");
  });

  test("crictl port-forward: into the pod's network namespace, and the error for a closed port", async () => {
    const runp = await crictl(["runp", stack.writeConfig("pf-pod", podConfig("pf"))], { timeoutMs: 120000 });
    assert.equal(runp.code, 0, runp.stderr);
    const pod = runp.stdout.trim();
    const children: ChildProcess[] = [];
    try {
      const info = JSON.parse((await crictl(["inspectp", pod])).stdout) as { info: { netNamespacePath: string } };
      const netns = info.info.netNamespacePath;
      assert.match(netns, /^\//);
      // A web server inside the pod's network namespace only (nothing on the host's loopback port).
      const www = path.join(stack.dir, "www");
      fs.mkdirSync(www);
      fs.writeFileSync(path.join(www, "index.html"), "inside the pod\n");
      const httpd = spawn("nsenter", [`--net=${netns}`, "busybox", "httpd", "-f", "-p", "127.0.0.1:8080", "-h", www], { stdio: "ignore" });
      children.push(httpd);
      const local = await freePort();
      const closed = await freePort();
      const pf = spawn(crictlPath(), ["-r", `unix://${stack.socket}`, "port-forward", pod, `${local}:8080`, `${closed}:8081`], { stdio: ["ignore", "pipe", "pipe"] });
      children.push(pf);
      let pfErr = "";
      pf.stderr.on("data", (b: Buffer) => (pfErr += b.toString()));
      const body = await waitFor("the forwarded port to answer", () => httpGet(local).catch(() => undefined), 30000, 300);
      assert.equal(body, "inside the pod\n");
      assert.equal(await httpGet(local), "inside the pod\n", "a second connection on the same session");
      await httpGet(closed).catch(() => undefined);
      await waitFor("crictl to report the closed port", () => (/error forwarding port 8081 to pod [0-9a-f]{64}, uid : .*connection refused/.test(pfErr) ? true : undefined), 15000, 200);
    } finally {
      for (const c of children) c.kill();
      assert.equal((await crictl(["stopp", pod])).code, 0);
      assert.equal((await crictl(["rmp", pod])).code, 0);
    }
  });

  test("nothing is left behind: no exec process in the container, no FIFO directory", async () => {
    const ps = await crictl(["exec", "--sync", ID, "ps", "-o", "args"]);
    assert.deepEqual(ps.stdout.trim().split("\n").filter((l) => !/^(PID|COMMAND|ps -o args)/.test(l.trim()) && l.trim()), ["sleep 1000"]);
    const fifos = path.join(stack.state, "cri", "exec");
    assert.ok(fs.existsSync(fifos), `${fifos} holds the exec FIFOs`);
    assert.deepEqual(fs.readdirSync(fifos), [], "no exec FIFO directory left");
  });
});

/** GET / on 127.0.0.1:`port` with a fresh connection; the body. */
function httpGet(port: number): Promise<string> {
  return fetch(`http://127.0.0.1:${port}/`, { headers: { connection: "close" }, signal: AbortSignal.timeout(5000) }).then((r) => r.text());
}

/** A websocket client for one exec: sends `send` (channel-prefixed) and collects each channel's bytes. */
function websocketExec(url: string, send: Buffer): Promise<Map<number, Buffer>> {
  const u = new URL(url);
  const key = randomBytes(16).toString("base64");
  return new Promise((resolve, reject) => {
    const sock = net.connect(Number(u.port), u.hostname);
    const out = new Map<number, Buffer>();
    let buf = Buffer.alloc(0);
    let upgraded = false;
    sock.on("connect", () => {
      sock.write([`GET ${u.pathname} HTTP/1.1`, `Host: ${u.host}`, "Upgrade: websocket", "Connection: Upgrade", `Sec-WebSocket-Key: ${key}`, "Sec-WebSocket-Version: 13", "Sec-WebSocket-Protocol: v4.channel.k8s.io", "", ""].join("\r\n"));
    });
    sock.on("data", (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (!upgraded) {
        const end = buf.indexOf("\r\n\r\n");
        if (end < 0) return;
        const head = buf.subarray(0, end).toString();
        if (!head.startsWith("HTTP/1.1 101")) return reject(new Error(head));
        const accept = createHash("sha1").update(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest("base64");
        if (!head.includes(`Sec-WebSocket-Accept: ${accept}`)) return reject(new Error(`bad accept: ${head}`));
        upgraded = true;
        buf = buf.subarray(end + 4);
        const mask = randomBytes(4);
        const payload = Buffer.from(send.map((b, i) => b ^ mask[i & 3]!));
        sock.write(Buffer.concat([Buffer.from([0x82, 0x80 | payload.length]), mask, payload]));
      }
      while (buf.length >= 2) {
        let len = buf[1]! & 0x7f;
        let off = 2;
        if (len === 126) {
          len = buf.readUInt16BE(2);
          off = 4;
        }
        if (buf.length < off + len) return;
        const op = buf[0]! & 0x0f;
        const p = buf.subarray(off, off + len);
        buf = buf.subarray(off + len);
        if (op === 8) {
          sock.end();
          return resolve(out);
        }
        if (op === 2 && p.length) out.set(p[0]!, Buffer.concat([out.get(p[0]!) ?? Buffer.alloc(0), p.subarray(1)]));
      }
    });
    sock.on("error", reject);
    sock.on("close", () => resolve(out));
  });
}
