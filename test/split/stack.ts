/**
 * The stack split over two "hosts", each a network namespace and a mount namespace of the caller's
 * own: a veth pair with private addresses between them, and a private tmpfs mounted by each over the
 * same directory, which holds its root and state, so neither sees the other's files. Host A runs
 * content, images, transfer and a gateway, host B the node group (snapshots, tasks, sandbox, cri) and a
 * gateway for clients on the node (`bin/flotilla up --only ...`, one config file for both, as the
 * README tells an operator). nats-server runs on host A with TLS and a password; every process talks
 * TCP with mutual TLS (certificates from `bin/flotilla certs init --host A --host B`).
 * Used by test/split and bench/tools/split.ts. Everything it starts is ended by PID at `stop`.
 */
import { spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { SERVICE_NAMES, type ServiceName } from "#libs/config";
import { pidsReferring, runCommand, waitFor, type CtrResult } from "../harness";
import { FLOTILLA, flotillaOk } from "../helpers/flotilla";
import { startNatsServer, type NatsServer } from "../helpers/nats";

export const HOST_A: readonly ServiceName[] = ["content", "images", "transfer", "gateway"];
/** The node group, and a gateway of the node's own for clients on it (ctr mounts a container's rootfs to read its image config). */
export const HOST_B: readonly ServiceName[] = ["snapshots", "tasks", "sandbox", "cri", "gateway"];
/** Ports inside the stack's own network namespaces (nothing else listens there). */
export const PORTS: Record<ServiceName, number> = { content: 7001, snapshots: 7002, images: 7003, tasks: 7004, transfer: 7005, sandbox: 7006, cri: 7007, gateway: 0 };
const NATS_PORT = 4222;

/** A ctr on a gateway's unix socket. */
export type Ctr = (args: string[], opts?: { input?: string | Buffer; timeoutMs?: number }) => Promise<CtrResult>;
export type CtrSpawn = (args: string[]) => ChildProcess;

export interface SplitHost {
  ns: string;
  ip: string;
  sup: ChildProcess;
  logFile: string;
  /** The supervisor's mount namespace (recorded to end everything in it). */
  mnt?: string;
}

export interface SplitStack {
  dir: string;
  certs: string;
  /** The directory each host mounts its private tmpfs on (root and state inside). */
  hostDir: string;
  cfgFile: string;
  ns: { a: string; b: string };
  ip: { a: string; b: string };
  hosts: [SplitHost, SplitHost];
  /** ctr in host A's mount namespace (this process's network, to reach a registry on loopback), on A's gateway. */
  ctr: Ctr;
  /** The same on host B (the node), on B's gateway. */
  node: Ctr;
  ctrSpawn: CtrSpawn;
  logs(): string;
  stop(): Promise<void>;
}

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

export async function startSplitStack(): Promise<SplitStack> {
  const tag = `${process.pid % 100000}`;
  const subnet = `10.${200 + (process.pid % 50)}.${process.pid % 250}`;
  const ns = { a: `flt-split-a-${tag}`, b: `flt-split-b-${tag}` };
  const ip = { a: `${subnet}.1`, b: `${subnet}.2` };
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "flt-split-"));
  const certs = path.join(dir, "certs");
  const hostDir = path.join(dir, "host");
  const cfgFile = path.join(dir, "config.toml");
  const socket = path.join(hostDir, "state", "flotilla.sock");
  fs.mkdirSync(hostDir);
  const hosts: SplitHost[] = [];
  let nats: NatsServer | undefined;

  const ctrOn = (h: number): Ctr => (args, opts = {}) => runCommand("nsenter", ["-t", String(hosts[h]!.sup.pid), "-m", "ctr", "-a", socket, "-n", "default", ...args], opts);
  const logs = (): string => hosts.map((h) => `--- ${h.ns}\n${fs.readFileSync(h.logFile, "utf8")}`).join("\n");

  /** `bin/flotilla up --only SERVICES -c CONFIG` in `netns`, in a mount namespace of its own with a private tmpfs on `hostDir`. */
  const upInHost = (netns: string, only: readonly ServiceName[], logFile: string): ChildProcess => {
    const fd = fs.openSync(logFile, "a");
    const script = `mount -t tmpfs -o mode=0711 flt-split "${hostDir}" && exec "$0" "$@"`;
    // nsenter --net, not `ip netns exec`: that one mounts a new /sys, without the cgroup mount runc needs.
    const child = spawn("nsenter", [`--net=/run/netns/${netns}`, "unshare", "--mount", "--propagation", "private", "sh", "-c", script,
      process.execPath, FLOTILLA, "up", "--only", only.join(","), "-c", cfgFile], { stdio: ["ignore", fd, fd] });
    fs.closeSync(fd);
    return child;
  };

  const stop = async (): Promise<void> => {
    for (const h of hosts) {
      if (h.sup.exitCode === null && h.sup.signalCode === null) {
        const exited = new Promise<void>((r) => h.sup.once("exit", () => r()));
        h.sup.kill("SIGTERM");
        await Promise.race([exited, new Promise((r) => setTimeout(r, 20000))]);
      }
    }
    // Whatever is left in the two hosts' mount namespaces (shims, containers) is this stack's.
    const mnts = new Set(hosts.map((h) => h.mnt).filter((m): m is string => !!m));
    for (const pid of [...pidsInMountNs(mnts), ...pidsReferring(dir)]) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        /* gone */
      }
    }
    await nats?.stop();
    for (const n of [ns.a, ns.b]) await runCommand("ip", ["netns", "del", n]);
    fs.rmSync(dir, { recursive: true, force: true });
  };

  try {
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
    fs.writeFileSync(cfgFile, toml.join("\n") + "\n");
    for (const [n, addr, only] of [[ns.a, ip.a, HOST_A], [ns.b, ip.b, HOST_B]] as const) {
      const logFile = path.join(dir, `${n}.log`);
      hosts.push({ ns: n, ip: addr, sup: upInHost(n, only, logFile), logFile });
    }
    for (const h of hosts) {
      await waitFor(`${h.ns} to be up`, () => {
        if (h.sup.exitCode !== null) throw new Error(`up exited ${h.sup.exitCode}`);
        h.mnt ??= mountNs(h.sup.pid!);
        return fs.readFileSync(h.logFile, "utf8").includes('"msg":"flotilla is up"') ? true : undefined;
      }, 120000, 200);
    }
  } catch (e) {
    const text = hosts.length ? logs().slice(-6000) : "";
    await stop();
    throw new Error(`the split stack did not come up: ${(e as Error).message}\n${text}`);
  }
  return {
    dir, certs, hostDir, cfgFile, ns, ip, hosts: hosts as [SplitHost, SplitHost],
    ctr: ctrOn(0),
    node: ctrOn(1),
    ctrSpawn: (args) => spawn("nsenter", ["-t", String(hosts[0]!.sup.pid), "-m", "ctr", "-a", socket, "-n", "default", ...args], { stdio: ["ignore", "pipe", "pipe"] }),
    logs,
    stop,
  };
}

export const median = (ms: number[]): number => [...ms].sort((a, b) => a - b)[Math.floor(ms.length / 2)]!;

/** Run `args` with `ctr`, failing with its stderr unless it exits 0. */
async function ctrOk(ctr: Ctr, args: string[]): Promise<void> {
  const r = await ctr(args, { timeoutMs: 120000 });
  if (r.code !== 0) throw new Error(`ctr ${args.join(" ")}: exit ${r.code}: ${r.stderr}`);
}

/** One `ctr images pull` of an image just removed (`ctr` on any host), and one `ctr run --rm` (`node` on the node): their times in ms. */
export async function timeOnce(ctr: Ctr, node: Ctr, ref: string, id: string): Promise<{ pull: number; run: number }> {
  await ctr(["images", "rm", "--sync", ref]);
  let s = performance.now();
  await ctrOk(ctr, ["images", "pull", "--plain-http", ref]);
  const pull = performance.now() - s;
  s = performance.now();
  await ctrOk(node, ["run", "--rm", ref, id, "true"]);
  return { pull, run: performance.now() - s };
}

/** `timeOnce` `n` times: the medians. */
export async function timings(ctr: Ctr, node: Ctr, ref: string, tag: string, n = 5): Promise<{ pull: number; run: number }> {
  const all: { pull: number; run: number }[] = [];
  for (let i = 0; i < n; i++) all.push(await timeOnce(ctr, node, ref, `${tag}-bench-${i}`));
  return { pull: median(all.map((x) => x.pull)), run: median(all.map((x) => x.run)) };
}

