/**
 * Issue 15, across hosts for real: the stack split over two "hosts" (network + mount namespaces, a
 * veth pair, a private root each; see ./stack.ts), every process on TCP with mutual TLS, NATS with TLS
 * and a password, each host's part started with `bin/flotilla up --only`. ctr pulls from a registry,
 * runs, execs, follows events, ingests content and collects garbage through the gateways (run and
 * exec on host B's gateway: ctr mounts a container's rootfs itself, so it runs on the node). Refusals
 * across the veth and the placement check at start. Then the same flow on one host with every
 * shortcut off (the gateway's read views and content reads, the snapshots process's local blob
 * reads), and the time `ctr images pull` and `ctr run --rm` take on each (a diagnostic line with the
 * ratios; bench/tools/split.ts measures them interleaved).
 */
import { after, before, describe, test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { runCommand, startStack, waitFor, type CtrResult, type Stack } from "../harness";
import { FLOTILLA, flotilla } from "../helpers/flotilla";
import { buildBusyboxImage, pushImage } from "../helpers/image";
import { sha256, startRegistry, type Registry } from "../helpers/registry";
import { PORTS, startSplitStack, timings, type Ctr, type CtrSpawn, type SplitHost, type SplitStack } from "./stack";

/**
 * The ctr flows of the stack tests, through the gateway: pull, run, exec, events, content ingest, GC.
 * `node` is a ctr on the host of the node group (run and exec: ctr mounts the rootfs to read the
 * image's /etc/group); `ctr` may be on any host.
 */
async function ctrFlows(t: TestContext, ctr: Ctr, node: Ctr, ctrSpawn: CtrSpawn, ref: string, tag: string): Promise<{ pullMs: number; runMs: number }> {
  const ok = (r: CtrResult, what: string): CtrResult => {
    assert.equal(r.code, 0, `${what}: ${r.stderr}`);
    return r;
  };
  const events = ctrSpawn(["events"]);
  let evOut = "";
  events.stdout!.on("data", (b: Buffer) => (evOut += b.toString()));
  try {
    // ctr events is live once it sees a change made after it started.
    let probe = 0;
    await waitFor("ctr events to follow", async () => {
      ok(await ctr(["namespaces", "create", `${tag}-probe-${probe++}`]), "namespaces create");
      return evOut.includes("/namespaces/create") ? true : undefined;
    }, 30000, 300);

    let started = Date.now();
    ok(await ctr(["images", "pull", "--plain-http", ref], { timeoutMs: 120000 }), "pull");
    const pullMs = Date.now() - started;
    ok(await ctr(["images", "check"]), "images check");
    assert.match((await ctr(["images", "ls", "-q"])).stdout, new RegExp(ref.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")));

    started = Date.now();
    const run = await node(["run", "--rm", ref, `${tag}-rm`, "sh", "-c", "echo from-the-node; exit 4"], { timeoutMs: 60000 });
    const runMs = Date.now() - started;
    assert.equal(run.stdout.trim(), "from-the-node", run.stderr);
    assert.equal(run.code, 4);

    ok(await node(["run", "-d", ref, `${tag}-d`, "sleep", "300"], { timeoutMs: 60000 }), "run -d");
    const ex = await node(["tasks", "exec", "--exec-id", "e1", `${tag}-d`, "sh", "-c", "echo exec-out; exit 5"]);
    assert.equal(ex.stdout.trim(), "exec-out", ex.stderr);
    assert.equal(ex.code, 5);
    assert.match(ok(await ctr(["tasks", "ls"]), "tasks ls").stdout, new RegExp(`${tag}-d\\s+\\d+\\s+RUNNING`));
    ok(await ctr(["tasks", "kill", "-s", "SIGKILL", `${tag}-d`]), "kill");
    await waitFor("the task to stop", async () => ((await ctr(["tasks", "ls"])).stdout.match(new RegExp(`${tag}-d\\s+\\d+\\s+STOPPED`)) ? true : undefined), 20000, 200);
    ok(await ctr(["tasks", "rm", `${tag}-d`]), "tasks rm");
    ok(await ctr(["containers", "rm", `${tag}-d`]), "containers rm");
    for (const topic of ["/images/create", "/containers/create", "/tasks/create", "/tasks/start", "/tasks/exec-added", "/tasks/exec-started", "/tasks/exit", "/tasks/delete", "/containers/delete", "/snapshot/prepare"]) {
      await waitFor(`ctr events to show ${topic}`, () => (evOut.includes(topic) ? true : undefined), 10000);
    }

    const blob = Buffer.from(`ingested on the ${tag} stack ${Date.now()}\n`);
    ok(await ctr(["content", "ingest", "--expected-digest", sha256(blob), `${tag}-ingest`], { input: blob }), "content ingest");
    assert.equal((await ctr(["content", "get", sha256(blob)])).stdout, blob.toString());
    assert.match(ok(await ctr(["content", "ls"]), "content ls").stdout, new RegExp(sha256(blob)));

    // GC: the image removed synchronously takes its blobs (content, host A) and snapshots (host B) with it.
    const before = ok(await ctr(["content", "ls", "-q"]), "content ls").stdout.split("\n").filter(Boolean);
    assert.ok(ok(await ctr(["snapshots", "ls"]), "snapshots ls").stdout.split("\n").filter(Boolean).length > 1, "the unpacked layer's snapshot");
    ok(await ctr(["images", "rm", "--sync", ref]), "images rm --sync");
    const afterRm = ok(await ctr(["content", "ls", "-q"]), "content ls").stdout.split("\n").filter(Boolean);
    assert.ok(afterRm.length < before.length, `blobs collected: ${before.length} -> ${afterRm.length}`);
    assert.ok(!afterRm.includes(sha256(blob)), "the unreferenced ingested blob is collected too");
    await waitFor("the snapshots to be collected", async () => (ok(await ctr(["snapshots", "ls"]), "snapshots ls").stdout.trim().split("\n").length === 1 ? true : undefined), 20000, 200);
    t.diagnostic(`${tag}: ctr images pull ${pullMs} ms, ctr run --rm ${runMs} ms`);
    return { pullMs, runMs };
  } finally {
    events.kill("SIGKILL");
  }
}

const measured: Record<string, { pull: number; run: number }> = {};

describe("the stack split over two hosts (network + mount namespaces), mutual TLS, NATS with TLS and a password (issue 15)", () => {
  let split: SplitStack;
  let reg: Registry;

  before(async () => {
    reg = await startRegistry();
    await pushImage(reg, "test/busybox", "latest", buildBusyboxImage());
    split = await startSplitStack();
  });

  after(async () => {
    await split?.stop();
    await reg?.stop();
  });

  test("each host sees only its own root; the gateway has no shortcut to owners on the other host", async () => {
    const inHost = (h: SplitHost, cmd: string[]): Promise<CtrResult> => runCommand("nsenter", ["-t", String(h.sup.pid), "-m", ...cmd]);
    const [a, b] = split.hosts;
    assert.deepEqual((await inHost(a, ["ls", path.join(split.hostDir, "root")])).stdout.split("\n").filter(Boolean).sort(), ["content", "gateway", "images", "transfer"]);
    assert.deepEqual((await inHost(b, ["ls", path.join(split.hostDir, "root")])).stdout.split("\n").filter(Boolean).sort(), ["cri", "gateway", "sandbox", "snapshots", "tasks"]);
    assert.deepEqual(fs.readdirSync(split.hostDir), [], "the test's own view of the directory stays empty");
    assert.match(split.logs(), /"msg":"running a part of the stack"/);
    // Everything across the veth is mutual TLS: no refusal was logged for the stack's own connections.
    assert.doesNotMatch(split.logs(), /TLS handshake refused/);
  });

  test("a client on host A without a certificate is refused by tasks on host B: a warn line there naming the peer", async () => {
    const r = await runCommand("nsenter", [`--net=/run/netns/${split.ns.a}`, "openssl", "s_client", "-connect", `${split.ip.b}:${PORTS.tasks}`, "-CAfile", path.join(split.certs, "ca.pem"), "-alpn", "h2"], { input: "", timeoutMs: 20000 });
    assert.match(r.stdout + r.stderr, /Verify return code: 0/, "the client verified the server");
    const line = await waitFor("the refusal on host B", () => fs.readFileSync(split.hosts[1].logFile, "utf8").split("\n").find((l) => l.includes("TLS handshake refused")));
    const entry = JSON.parse(line.slice(line.indexOf("{"))) as { reason: string; peer: string };
    assert.equal(entry.reason, "no client certificate");
    assert.match(entry.peer, new RegExp(`^${split.ip.a.replace(/\./g, "\\.")}:\\d+$`));
  });

  test("ctr through the gateway: pull from a registry, run, exec, events, content ingest, GC", async (t) => {
    const ref = `${reg.host}/test/busybox:latest`;
    await ctrFlows(t, split.ctr, split.node, split.ctrSpawn, ref, "split");
    measured.split = await timings(split.ctr, split.node, ref, "split");
  });

  test("a node-group member split from its group is refused at start, naming the placement", async () => {
    // tasks on host A while snapshots and sandbox are dialled on host B.
    const r = await runCommand("ip", ["netns", "exec", split.ns.a, process.execPath, FLOTILLA, "up", "--only", "tasks", "-c", split.cfgFile], { timeoutMs: 30000 });
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, new RegExp(`placement: tasks runs here but snapshots, of the same node group \\(snapshots, tasks, sandbox, cri\\), is dialled at ${split.ip.b.replace(/\./g, "\\.")}, which is not this host`));
    // And the config alone, when it puts the node group on two hosts.
    const bad = path.join(split.dir, "bad.toml");
    fs.writeFileSync(bad, fs.readFileSync(split.cfgFile, "utf8").replace(`advertise_address = "${split.ip.b}:${PORTS.snapshots}"`, `advertise_address = "${split.ip.a}:${PORTS.snapshots}"`));
    const c = await flotilla(["config", "check", "-c", bad]);
    assert.equal(c.code, 1);
    assert.match(c.stderr, new RegExp(`placement: snapshots, tasks, sandbox, cri form the node group and run on one host, but snapshots is dialled at ${split.ip.a.replace(/\./g, "\\.")} and tasks at ${split.ip.b.replace(/\./g, "\\.")}`));
  });
});

describe("the same flow on one host with every shortcut off", () => {
  let stack: Stack;
  let reg: Registry;

  before(async () => {
    stack = await startStack({
      readViews: false,
      flotillaToml: ["gateway_content_reads = false"],
      extraToml: '[plugins."io.containerd.differ.v1.walking"]\nlocal_content_reads = false',
    });
    reg = await startRegistry();
    await pushImage(reg, "test/busybox", "latest", buildBusyboxImage());
  });

  after(async () => {
    await stack?.stop();
    await reg?.stop();
  });

  test("ctr through the gateway: pull from a registry, run, exec, events, content ingest, GC", async (t) => {
    const ref = `${reg.host}/test/busybox:latest`;
    const ctr: Ctr = (a, o) => stack.ctr(a, o);
    await ctrFlows(t, ctr, ctr, (a) => stack.ctrSpawn(a), ref, "onehost");
    measured.oneHost = await timings(ctr, ctr, ref, "onehost");
    if (measured.split) {
      const s = measured.split;
      const o = measured.oneHost;
      t.diagnostic(`medians of 5: ctr images pull split ${s.pull.toFixed(0)} ms / one host ${o.pull.toFixed(0)} ms = ${(s.pull / o.pull).toFixed(2)}; ctr run --rm split ${s.run.toFixed(0)} ms / one host ${o.run.toFixed(0)} ms = ${(s.run / o.run).toFixed(2)}`);
    }
  });
});
