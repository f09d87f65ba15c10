/**
 * Issue 15, across hosts for real: the stack split over two "hosts", each a network namespace and a
 * mount namespace of this test's own (a veth pair with private addresses between them; each mounts a
 * private tmpfs over the same root directory, so neither sees the other's files). Host A runs
 * content, images, transfer and the gateway (`bin/flotilla up --only ...`), host B the node group
 * (snapshots, tasks, sandbox); nats-server runs on A with TLS and a password; every process talks TCP
 * with mutual TLS (certificates from `bin/flotilla certs init --host A --host B`), one config file
 * for both, as the README tells an operator. ctr, on host A's files, pulls from a registry, runs,
 * execs, follows events, ingests content and collects garbage through the gateway (run and exec
 * through a gateway on host B: ctr mounts a container's rootfs itself, so it runs on the node). Then the same flow
 * on one host with every shortcut off (the gateway's read views and content reads, the snapshots
 * process's local blob reads), and the time `ctr images pull` and `ctr run --rm` take on each (a
 * diagnostic line: split/one-host ratios).
 */
import { after, before, describe, test, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { SERVICE_NAMES, type ServiceName } from "#libs/config";
import { runCommand, pidsReferring, startStack, waitFor, type CtrResult, type Stack } from "../harness";
import { FLOTILLA, flotilla, flotillaOk } from "../helpers/flotilla";
import { buildBusyboxImage, pushImage } from "../helpers/image";
import { startNatsServer, type NatsServer } from "../helpers/nats";
import { sha256, startRegistry, type Registry } from "../helpers/registry";

const HOST_A: readonly ServiceName[] = ["content", "images", "transfer", "gateway"];
/** The node group, and a gateway of the node's own for clients on it (ctr mounts a container's rootfs to read its image config). */
const HOST_B: readonly ServiceName[] = ["snapshots", "tasks", "sandbox", "gateway"];
/** Ports inside the test's own network namespaces (nothing else listens there). */
const PORTS: Record<ServiceName, number> = { content: 7001, snapshots: 7002, images: 7003, tasks: 7004, transfer: 7005, sandbox: 7006, gateway: 0 };
const NATS_PORT = 4222;

/** Run a command, failing with its output when it exits non-zero. */
async function sh(cmd: string, args: string[]): Promise<string> {
  const r = await runCommand(cmd, args, { timeoutMs: 30000 });
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(" ")}: exit ${r.code}: ${r.stderr}`);
  return r.stdout;
}

/** The mount namespace of a process (its inode link), or undefined once it is gone. */
function mountNs(pid: number): string | undefined {
  try {
    return fs.readlinkSync(`/proc/${pid}/ns/mnt`);
  } catch {
    return undefined;
  }
}

/** PIDs of every process in one of these mount namespaces. */
function pidsInMountNs(nss: ReadonlySet<string>): number[] {
  return fs.readdirSync("/proc").filter((e) => /^\d+$/.test(e)).map(Number).filter((p) => p !== process.pid && nss.has(mountNs(p) ?? ""));
}

interface SplitHost {
  ns: string;
  ip: string;
  sup: ChildProcess;
  logFile: string;
  /** The supervisor's mount namespace (recorded to end everything in it). */
  mnt?: string;
}

/** A ctr on the gateway's unix socket; `ctr` itself ran in host A's mount namespace (network: this one's, for the registry). */
type Ctr = (args: string[], opts?: { input?: string | Buffer; timeoutMs?: number }) => Promise<CtrResult>;
type CtrSpawn = (args: string[]) => ChildProcess;

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

const median = (ms: number[]): number => [...ms].sort((a, b) => a - b)[Math.floor(ms.length / 2)]!;

/** `ctr images pull` (of an image just removed) and `ctr run --rm` timed `n` times each: the medians in ms. */
async function timings(ctr: Ctr, node: Ctr, ref: string, tag: string, n = 5): Promise<{ pull: number; run: number }> {
  const pull: number[] = [];
  const run: number[] = [];
  for (let i = 0; i < n; i++) {
    await ctr(["images", "rm", "--sync", ref]);
    const s = performance.now();
    const r = await ctr(["images", "pull", "--plain-http", ref], { timeoutMs: 120000 });
    pull.push(performance.now() - s);
    assert.equal(r.code, 0, r.stderr);
  }
  for (let i = 0; i < n; i++) {
    const s = performance.now();
    const r = await node(["run", "--rm", ref, `${tag}-bench-${i}`, "true"], { timeoutMs: 60000 });
    run.push(performance.now() - s);
    assert.equal(r.code, 0, r.stderr);
  }
  return { pull: median(pull), run: median(run) };
}

const measured: Record<string, { pull: number; run: number }> = {};

describe("the stack split over two hosts (network + mount namespaces), mutual TLS, NATS with TLS and a password (issue 15)", () => {
  const tag = `${process.pid % 100000}`;
  const subnet = `10.${200 + (process.pid % 50)}.${process.pid % 250}`;
  let dir: string;
  let certs: string;
  let hostDir: string;
  let cfgFile: string;
  let socket: string;
  let reg: Registry;
  let nats: NatsServer | undefined;
  const hosts: SplitHost[] = [];
  const ns = { a: `flt-split-a-${tag}`, b: `flt-split-b-${tag}` };
  const ip = { a: `${subnet}.1`, b: `${subnet}.2` };

  const ctrOn = (h: number): Ctr => (args, opts = {}) => runCommand("nsenter", ["-t", String(hosts[h]!.sup.pid), "-m", "ctr", "-a", socket, "-n", "default", ...args], opts);
  const ctr = ctrOn(0);
  const node = ctrOn(1);
  const ctrSpawn: CtrSpawn = (args) => spawn("nsenter", ["-t", String(hosts[0]!.sup.pid), "-m", "ctr", "-a", socket, "-n", "default", ...args], { stdio: ["ignore", "pipe", "pipe"] });
  const logs = (): string => hosts.map((h) => `--- ${h.ns}\n${fs.readFileSync(h.logFile, "utf8")}`).join("\n");

  /** `bin/flotilla up --only SERVICES -c CONFIG` in `netns`, in a mount namespace of its own with a private tmpfs on the stack's directory. */
  function upInHost(netns: string, only: readonly ServiceName[], logFile: string): ChildProcess {
    const fd = fs.openSync(logFile, "a");
    const script = `mount -t tmpfs -o mode=0711 flt-split "${hostDir}" && exec "$0" "$@"`;
    // nsenter --net, not `ip netns exec`: that one mounts a new /sys, without the cgroup mount runc needs.
    const child = spawn("nsenter", [`--net=/run/netns/${netns}`, "unshare", "--mount", "--propagation", "private", "sh", "-c", script,
      process.execPath, FLOTILLA, "up", "--only", only.join(","), "-c", cfgFile], { stdio: ["ignore", fd, fd] });
    fs.closeSync(fd);
    return child;
  }

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "flt-split-"));
    certs = path.join(dir, "certs");
    hostDir = path.join(dir, "host");
    fs.mkdirSync(hostDir);
    socket = path.join(hostDir, "state", "flotilla.sock");
    await flotillaOk(["certs", "init", certs, "--host", ip.a, "--host", ip.b]);
    // Two hosts: a network namespace each, joined by a veth pair with private addresses.
    for (const n of [ns.a, ns.b]) await sh("ip", ["netns", "add", n]);
    const va = `fsa${tag}`;
    const vb = `fsb${tag}`;
    await sh("ip", ["link", "add", va, "netns", ns.a, "type", "veth", "peer", "name", vb, "netns", ns.b]);
    for (const [n, v, a] of [[ns.a, va, ip.a], [ns.b, vb, ip.b]] as const) {
      await sh("ip", ["-n", n, "addr", "add", `${a}/30`, "dev", v]);
      await sh("ip", ["-n", n, "link", "set", v, "up"]);
      await sh("ip", ["-n", n, "link", "set", "lo", "up"]);
    }
    nats = await startNatsServer({ dir: path.join(dir, "nats"), host: ip.a, port: NATS_PORT, certs, user: "flotilla", password: "split pass", wrap: ["ip", "netns", "exec", ns.a] });
    const f = (n: string): string => JSON.stringify(path.join(certs, n));
    const toml = [
      "version = 2",
      `root = ${JSON.stringify(path.join(hostDir, "root"))}`,
      `state = ${JSON.stringify(path.join(hostDir, "state"))}`,
      "[grpc]", `address = ${JSON.stringify(socket)}`,
      "[flotilla.tls]", `ca = ${f("ca.pem")}`, `cert = ${f("client.pem")}`, `key = ${f("client-key.pem")}`,
      "[flotilla.nats]", `url = "nats://${ip.a}:${NATS_PORT}"`, 'user = "flotilla"', 'password = "split pass"',
      `tls_ca = ${f("ca.pem")}`, `tls_cert = ${f("client.pem")}`, `tls_key = ${f("client-key.pem")}`,
    ];
    for (const s of SERVICE_NAMES) {
      toml.push(`[flotilla.services.${s}]`, `tls_cert = ${f(`${s}.pem`)}`, `tls_key = ${f(`${s}-key.pem`)}`);
      if (s !== "gateway") toml.push(`address = "tcp://0.0.0.0:${PORTS[s]}"`, `advertise_address = "${HOST_A.includes(s) ? ip.a : ip.b}:${PORTS[s]}"`);
    }
    cfgFile = path.join(dir, "config.toml");
    fs.writeFileSync(cfgFile, toml.join("\n") + "\n");
    reg = await startRegistry();
    await pushImage(reg, "test/busybox", "latest", buildBusyboxImage());
    for (const [n, addr, only] of [[ns.a, ip.a, HOST_A], [ns.b, ip.b, HOST_B]] as const) {
      const logFile = path.join(dir, `${n}.log`);
      hosts.push({ ns: n, ip: addr, sup: upInHost(n, only, logFile), logFile });
    }
    try {
      for (const h of hosts) {
        await waitFor(`${h.ns} to be up`, () => {
          if (h.sup.exitCode !== null) throw new Error(`up exited ${h.sup.exitCode}`);
          h.mnt ??= mountNs(h.sup.pid!);
          return fs.readFileSync(h.logFile, "utf8").includes('"msg":"flotilla is up"') ? true : undefined;
        }, 120000, 200);
      }
    } catch (e) {
      throw new Error(`${(e as Error).message}\n${logs().slice(-6000)}`);
    }
  });

  after(async () => {
    for (const h of hosts) {
      if (h.sup.exitCode === null && h.sup.signalCode === null) {
        const exited = new Promise<void>((r) => h.sup.once("exit", () => r()));
        h.sup.kill("SIGTERM");
        await Promise.race([exited, new Promise((r) => setTimeout(r, 20000))]);
      }
    }
    // Whatever is left in the two hosts' mount namespaces (shims, containers) is this test's.
    const mnts = new Set(hosts.map((h) => h.mnt).filter((m): m is string => !!m));
    for (const pid of [...pidsInMountNs(mnts), ...(dir ? pidsReferring(dir) : [])]) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        /* gone */
      }
    }
    await nats?.stop();
    await reg?.stop();
    for (const n of [ns.a, ns.b]) await runCommand("ip", ["netns", "del", n]);
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  test("each host sees only its own root; the gateway has no shortcut to owners on the other host", async () => {
    const inHost = (h: SplitHost, cmd: string[]): Promise<CtrResult> => runCommand("nsenter", ["-t", String(h.sup.pid), "-m", ...cmd]);
    const [a, b] = hosts as [SplitHost, SplitHost];
    assert.deepEqual((await inHost(a, ["ls", path.join(hostDir, "root")])).stdout.split("\n").filter(Boolean).sort(), ["content", "gateway", "images", "transfer"]);
    assert.deepEqual((await inHost(b, ["ls", path.join(hostDir, "root")])).stdout.split("\n").filter(Boolean).sort(), ["gateway", "sandbox", "snapshots", "tasks"]);
    assert.deepEqual(fs.readdirSync(hostDir), [], "the test's own view of the directory stays empty");
    assert.match(logs(), /"msg":"running a part of the stack"/);
    // Everything across the veth is mutual TLS: no refusal was logged for the stack's own connections.
    assert.doesNotMatch(logs(), /TLS handshake refused/);
  });

  test("a client on host A without a certificate is refused by tasks on host B: a warn line there naming the peer", async () => {
    const r = await runCommand("nsenter", [`--net=/run/netns/${ns.a}`, "openssl", "s_client", "-connect", `${ip.b}:${PORTS.tasks}`, "-CAfile", path.join(certs, "ca.pem"), "-alpn", "h2"], { input: "", timeoutMs: 20000 });
    assert.match(r.stdout + r.stderr, /Verify return code: 0/, "the client verified the server");
    const line = await waitFor("the refusal on host B", () => fs.readFileSync(hosts[1]!.logFile, "utf8").split("\n").find((l) => l.includes("TLS handshake refused")));
    const entry = JSON.parse(line.slice(line.indexOf("{"))) as { reason: string; peer: string };
    assert.equal(entry.reason, "no client certificate");
    assert.match(entry.peer, new RegExp(`^${ip.a.replace(/\./g, "\\.")}:\\d+$`));
  });

  test("ctr through the gateway: pull from a registry, run, exec, events, content ingest, GC", async (t) => {
    const ref = `${reg.host}/test/busybox:latest`;
    await ctrFlows(t, ctr, node, ctrSpawn, ref, "split");
    measured.split = await timings(ctr, node, ref, "split");
  });

  test("a node-group member split from its group is refused at start, naming the placement", async () => {
    // tasks on host A while snapshots and sandbox are dialled on host B.
    const r = await runCommand("ip", ["netns", "exec", ns.a, process.execPath, FLOTILLA, "up", "--only", "tasks", "-c", cfgFile], { timeoutMs: 30000 });
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, new RegExp(`placement: tasks runs here but snapshots, of the same node group \\(snapshots, tasks, sandbox\\), is dialled at ${ip.b.replace(/\./g, "\\.")}, which is not this host`));
    // And the config alone, when it puts the node group on two hosts.
    const bad = path.join(dir, "bad.toml");
    fs.writeFileSync(bad, fs.readFileSync(cfgFile, "utf8").replace(`advertise_address = "${ip.b}:${PORTS.snapshots}"`, `advertise_address = "${ip.a}:${PORTS.snapshots}"`));
    const c = await flotilla(["config", "check", "-c", bad]);
    assert.equal(c.code, 1);
    assert.match(c.stderr, new RegExp(`placement: snapshots, tasks, sandbox form the node group and run on one host, but snapshots is dialled at ${ip.a.replace(/\./g, "\\.")} and tasks at ${ip.b.replace(/\./g, "\\.")}`));
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
