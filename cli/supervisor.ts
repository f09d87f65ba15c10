/**
 * `flotilla up`: runs the whole stack in the foreground. It starts its own nats-server (JetStream, on
 * loopback) when no NATS URL is configured, starts one process per service, restarts a crashed one
 * with exponential backoff, and stops everything cleanly on SIGINT/SIGTERM.
 * A process that exits with status 0 (a SIGTERM sent to it on purpose) stays stopped until
 * `flotilla start`. "flotilla is up" is logged, and readiness signalled, once every service's
 * grpc.health.v1 answers SERVING and the gateway socket answers calls.
 * The PIDs it manages are kept in `<state>/supervisor.json` (write-then-rename) for operators and tests;
 * `<state>/supervisor.sock` (0600) answers `flotilla ps|stop|start|restart` (one JSON line each way).
 */
import { spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as dns from "node:dns/promises";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import type { Logger } from "pino";
import type { HealthClient } from "../libs/clients/health";
import type { ChannelPool } from "../libs/grpc/client";
import { dialAddress, SERVICE_NAMES, type Config, type ServiceName } from "../libs/config";
import { tlsFor, type TlsMaterial } from "../libs/grpc/tls";
import { dialHost, GATEWAY_SERVICES, NODE_GROUP, splitGroupError } from "../libs/topology";
import { notifyReady } from "../libs/service/notify";
import { checkConfig } from "./components";

/**
 * Node flags every service process runs with (the systemd units and the compose file pass the same).
 * `--initial-old-space-size=64`: V8 starts with an old-generation limit of a few MiB and, on the data
 * paths (content writes, registry downloads, gateway relays), starts a full mark-compact every few
 * tens of milliseconds; a 64 MiB start cuts them from ~10 to ~1 per 50 MB pull and halves the gateway's
 * and the content process's CPU per ingested MiB. Idle processes stay as small as before.
 * `--max-semi-space-size=1` (MiB): V8's young generation otherwise grows to 8-16 MiB per semi-space at
 * start-up and under load and never shrinks back; capped, each idle service holds ~6 MiB PSS less and the
 * stack ~110 MiB less after two pull/run workloads (bench/footprint), for the same CPU per workload
 * (measured: a scavenge costs what survives it, and what the data paths allocate dies young).
 */
export const SERVICE_NODE_FLAGS = ["--initial-old-space-size=64", "--max-semi-space-size=1"];

/**
 * glibc malloc settings every service process runs with (and passes on to its children; the systemd
 * units and the compose file set the same; a value in the supervisor's own environment wins).
 * `MALLOC_ARENA_MAX=2`: each thread that mallocs (libuv's pool, V8's, the snapshots process's apply
 * workers) would otherwise get an arena of its own that keeps its free memory after the thread is idle
 * or gone. `MALLOC_MMAP_THRESHOLD_=131072`: a fixed threshold (glibc raises its own after each large
 * free), so data-path Buffers of 128 KiB and more are mapped and unmapped, never left fragmenting the
 * heap. After each of three pull/run workloads the services held 184 -> 170 MiB PSS on average (one run
 * each on a loaded host; the snapshots process 37 -> 31 MiB), for the same CPU per workload.
 */
export const SERVICE_ENV: Readonly<Record<string, string>> = { MALLOC_ARENA_MAX: "2", MALLOC_MMAP_THRESHOLD_: "131072" };

/** The compiled services (`dist/services`, beside this file's `dist/cli`). */
const SERVICES_DIR = path.join(__dirname, "..", "services");

const MIN_BACKOFF_MS = 200;
const MAX_BACKOFF_MS = 10_000;
const STABLE_AFTER_MS = 30_000;

interface Managed {
  name: string;
  argv: string[];
  env: NodeJS.ProcessEnv;
  /** Its gRPC address (health), or the NATS URL. */
  address: string;
  child?: ChildProcess;
  startedAt: number;
  backoff: number;
  restarts: number;
  timer?: NodeJS.Timeout;
  /** Stopped on purpose (exit status 0, or `flotilla stop`): not restarted until `flotilla start`. */
  held: boolean;
}

/** One line of `flotilla ps`. */
export interface ProcessStatus {
  name: string;
  pid: number | null;
  address: string;
  /** grpc.health.v1 status (SERVING, NOT_SERVING, ...), "-" for NATS, "DOWN" when it does not answer. */
  health: string;
  restarts: number;
  /** Seconds since it started; null when not running. */
  uptime: number | null;
  state: "running" | "stopped" | "restarting";
}


/**
 * The grpc.health.v1 service name that tells whether process `name` itself serves: "" (overall) for a
 * service process; for the gateway one of its own services, since its overall status follows every owner.
 */
export function ownHealthName(name: string): string {
  return name === "gateway" ? GATEWAY_SERVICES[0] : "";
}

/**
 * Asks processes' grpc.health.v1 about `service` (default overall) with a deadline; "DOWN" when one
 * does not answer. Its clients share channels of its own, closed by `close`.
 */
export class HealthChecks {
  private channels: ChannelPool | undefined;
  private readonly clients = new Map<string, HealthClient>();

  /** With `tls` (the `[flotilla.tls]` client certificate), processes on TCP are asked over mutual TLS. */
  constructor(private readonly tls?: TlsMaterial) {}

  async of(address: string, timeoutMs = 1000, service = ""): Promise<string> {
    let c = this.clients.get(address);
    // The gRPC client (protobufjs, OpenTelemetry's API, the proto set) is loaded on the first health
    // check, once `up` has started every process, not before it spawns the first.
    const { HealthClient: Client, HealthStatus } = require("../libs/clients/health") as typeof import("../libs/clients/health");
    const { ChannelPool: Pool } = require("../libs/grpc/client") as typeof import("../libs/grpc/client");
    const { background } = require("../libs/context") as typeof import("../libs/context");
    if (!c) this.clients.set(address, (c = new Client((this.channels ??= new Pool(this.tls)).get(address))));
    try {
      const status = await c.check({ ...background(), deadline: new Date(Date.now() + timeoutMs) }, service);
      return HealthStatus[status] ?? String(status);
    } catch {
      return "DOWN";
    }
  }

  close(): void {
    this.channels?.close();
  }
}

/** The control socket of the `up` whose state directory is `state`. */
export function controlSocket(state: string): string {
  return path.join(state, "supervisor.sock");
}

/** Whether something could listen on 127.0.0.1:`port` right now. */
function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once("error", () => resolve(false));
    s.listen(port, "127.0.0.1", () => s.close(() => resolve(true)));
  });
}

/** The first port of the kernel's ephemeral range (where bind(0) and outgoing connections take theirs). */
function ephemeralLow(): number {
  try {
    const lo = Number(fs.readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/)[0]);
    return Number.isInteger(lo) && lo > 11_000 ? lo : 32_768;
  } catch {
    return 32_768;
  }
}

/**
 * A loopback TCP port free now, for a listener that binds it a little later (the embedded nats-server,
 * the metrics and registry ports of tests). It is picked at random below the ephemeral range: a port
 * from bind(0) is in that range, where any outgoing connection on the host may take it as its local
 * port before the listener binds it (EADDRINUSE), and where the next bind(0) may hand it out again.
 */
export async function freePort(): Promise<number> {
  const lo = 10_000;
  const hi = ephemeralLow();
  for (let i = 0; i < 100; i++) {
    const port = lo + Math.floor(Math.random() * (hi - lo));
    if (await canListen(port)) return port;
  }
  throw new Error(`no free port found in ${lo}-${hi - 1} on 127.0.0.1`);
}

export async function waitForPort(port: number, timeoutMs: number, host = "127.0.0.1"): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const c = net.connect(port, host);
      c.once("connect", () => { c.destroy(); resolve(true); });
      c.once("error", () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > until) throw new Error(`nothing listens on ${host}:${port} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export class Supervisor {
  private readonly procs = new Map<string, Managed>();
  private stopping = false;
  private natsUrl = "";
  private readonly stateFile: string;
  private control?: net.Server;
  private readonly health: HealthChecks;

  /**
   * `only`: the services this `up` runs (`up --only content,images`), the others running elsewhere
   * (another host, another `up`); all of them when absent.
   */
  constructor(private readonly cfg: Config, private readonly configFile: string | undefined, private readonly log: Logger, private readonly only?: readonly ServiceName[]) {
    this.stateFile = path.join(cfg.state, "supervisor.json");
    this.health = new HealthChecks(tlsFor(cfg)); // its health checks dial the services
  }

  /** This host's addresses, its name, and the node group's host names that resolve to one of them. */
  private async localHosts(): Promise<Set<string>> {
    const local = new Set<string>([os.hostname(), "localhost"]);
    for (const list of Object.values(os.networkInterfaces())) for (const a of list ?? []) local.add(a.address);
    for (const s of NODE_GROUP) {
      const host = dialHost(dialAddress(this.cfg, s));
      if (!host || local.has(host) || net.isIP(host)) continue;
      const found = await dns.lookup(host, { all: true }).catch(() => []);
      if (found.some((a) => local.has(a.address))) local.add(host);
    }
    return local;
  }

  private writeState(): void {
    const services: Record<string, number | null> = {};
    for (const [n, m] of this.procs) services[n] = m.child?.pid ?? null;
    const tmp = `${this.stateFile}.tmp`;
    fs.writeFileSync(tmp, JSON.stringify({ pid: process.pid, nats_url: this.natsUrl, services }, null, 2));
    fs.renameSync(tmp, this.stateFile);
  }

  private spawn(m: Managed): void {
    m.held = false;
    const [cmd, ...args] = m.argv;
    const child = spawn(cmd!, args, { env: m.env, stdio: ["ignore", "inherit", "inherit"] });
    m.child = child;
    m.startedAt = Date.now();
    this.log.info({ service: m.name, pid: child.pid }, "started");
    this.writeState();
    child.on("exit", (code, signal) => {
      if (m.child !== child) return;
      m.child = undefined;
      this.writeState();
      if (this.stopping) return;
      if (m.held || code === 0) {
        m.held = true;
        this.log.info({ service: m.name, code, signal }, "stopped; not restarted until `flotilla start`");
        return;
      }
      if (Date.now() - m.startedAt > STABLE_AFTER_MS) m.backoff = MIN_BACKOFF_MS;
      this.log.warn({ service: m.name, code, signal, restartInMs: m.backoff }, "exited unexpectedly; restarting");
      m.restarts++;
      m.timer = setTimeout(() => {
        m.timer = undefined;
        if (!this.stopping) this.spawn(m);
      }, m.backoff);
      m.backoff = Math.min(m.backoff * 2, MAX_BACKOFF_MS);
    });
  }

  private add(name: string, argv: string[], env: NodeJS.ProcessEnv, address: string): void {
    const m: Managed = { name, argv, env, address, startedAt: 0, backoff: MIN_BACKOFF_MS, restarts: 0, held: false };
    this.procs.set(name, m);
    this.spawn(m);
  }

  async start(): Promise<void> {
    // A wrong key fails here, before any process starts, with the message each process would give.
    const ignored = checkConfig(this.cfg);
    if (ignored.length) this.log.warn({ tables: ignored.map((t) => `plugins.${JSON.stringify(t)}`) }, "ignoring the config of plugins Flotilla does not implement");
    if (this.only && !this.cfg.flotilla.nats.url) throw new Error("up --only: set [flotilla.nats] url, the NATS server every part of the stack reaches (an embedded one would be this part's alone)");
    // An address lists only once its interface is up and running (a link that just came up, a boot
    // where the network is still starting): give this host's addresses a few seconds to appear.
    let local = await this.localHosts();
    let split = splitGroupError(this.cfg, this.only ?? SERVICE_NAMES, local);
    for (let i = 0; split && i < 20; i++) {
      await new Promise((r) => setTimeout(r, 250));
      local = await this.localHosts();
      split = splitGroupError(this.cfg, this.only ?? SERVICE_NAMES, local);
    }
    if (split) throw new Error(`${split} (this host: ${[...local].join(", ")})`);
    fs.mkdirSync(this.cfg.state, { recursive: true, mode: 0o711 });
    fs.mkdirSync(this.cfg.root, { recursive: true, mode: 0o711 });
    await this.listenControl();
    this.natsUrl = this.cfg.flotilla.nats.url;
    // Under systemd (`up` as a Type=notify unit) the readiness socket is ours: a service that saw it
    // would announce the whole unit ready as soon as it alone serves.
    const { NOTIFY_SOCKET: _ours, ...childEnv } = process.env;
    // The services start without waiting for NATS to listen: its URL is known once its port is chosen,
    // and a process's event bus queues what it publishes until it connects (loading a service takes
    // far longer than NATS takes to listen). "Up" still waits for NATS below.
    let natsListening: Promise<void> = Promise.resolve();
    if (!this.natsUrl) {
      const n = this.cfg.flotilla.nats;
      const port = n.embedded_port || (await freePort());
      fs.mkdirSync(n.embedded_store_dir, { recursive: true });
      const host = n.embedded_address.includes(":") ? `[${n.embedded_address}]` : n.embedded_address;
      this.natsUrl = `nats://${host === "0.0.0.0" || host === "[::]" ? "127.0.0.1" : host}:${port}`;
      // The config's credentials are the embedded server's too (TLS is for a server run outside), in
      // a file of its own (0600) rather than on its command line.
      const auth = n.token ? `authorization { token: ${JSON.stringify(n.token)} }` : n.user || n.password ? `authorization { user: ${JSON.stringify(n.user)}, password: ${JSON.stringify(n.password)} }` : "";
      const conf = path.join(this.cfg.state, "nats.conf");
      fs.writeFileSync(conf, `${auth}\n`, { mode: 0o600 });
      fs.chmodSync(conf, 0o600);
      this.add("nats", ["nats-server", "-c", conf, "-a", n.embedded_address, "-p", String(port), "-js", "-sd", n.embedded_store_dir], childEnv, this.natsUrl);
      this.log.info({ address: n.embedded_address, port, store: n.embedded_store_dir, url: this.natsUrl }, "embedded nats-server");
      natsListening = waitForPort(port, 10_000, n.embedded_address === "0.0.0.0" || n.embedded_address === "::" ? "127.0.0.1" : n.embedded_address);
    }
    const env = { ...SERVICE_ENV, ...childEnv, FLOTILLA_NATS_URL: this.natsUrl };
    const cfgArgs = this.configFile ? ["--config", this.configFile] : [];
    const order = ([...SERVICE_NAMES.filter((s) => s !== "gateway"), "gateway"] as ServiceName[]).filter((s) => !this.only || this.only.includes(s));
    if (this.only) this.log.info({ services: order, elsewhere: SERVICE_NAMES.filter((s) => !order.includes(s)).map((s) => `${s} at ${dialAddress(this.cfg, s)}`) }, "running a part of the stack");
    // FLOTILLA_NODE_ARGS: extra Node flags for every service process (profiling, heap limits), after ours.
    const nodeArgs = [...SERVICE_NODE_FLAGS, ...(process.env.FLOTILLA_NODE_ARGS ?? "").split(/\s+/).filter(Boolean)];
    for (const s of order) {
      this.add(s, [process.execPath, ...nodeArgs, path.join(SERVICES_DIR, s, "main.js"), ...cfgArgs], env, dialAddress(this.cfg, s));
    }
    await Promise.all([natsListening, this.waitServing(order)]);
    if (this.stopping) return;
    this.log.info({ nats: this.natsUrl, socket: this.cfg.grpc.address, state: this.stateFile, control: controlSocket(this.cfg.state), startupMs: Math.round(performance.now()) }, "flotilla is up");
    notifyReady(this.log);
  }

  /**
   * Wait until every service answers SERVING (the gateway's answer comes through its public socket,
   * so it also proves that socket takes calls). Says which are missing every 30 s while waiting.
   */
  private async waitServing(order: ServiceName[]): Promise<void> {
    let pending = [...order];
    let nextReport = Date.now() + 30_000;
    while (pending.length && !this.stopping) {
      const status = await Promise.all(pending.map((s) => this.health.of(this.procs.get(s)!.address, 1000, ownHealthName(s))));
      pending = pending.filter((_, i) => status[i] !== "SERVING");
      if (!pending.length) return;
      if (Date.now() > nextReport) {
        this.log.warn({ waitingFor: pending }, "not serving yet");
        nextReport = Date.now() + 30_000;
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** What `flotilla ps` shows. */
  async status(): Promise<ProcessStatus[]> {
    return Promise.all([...this.procs.values()].map(async (m): Promise<ProcessStatus> => {
      const pid = m.child?.pid ?? null;
      const health = m.name === "nats" ? "-" : pid ? await this.health.of(m.address, 1000, ownHealthName(m.name)) : "DOWN";
      return {
        name: m.name, pid, address: m.address, health, restarts: m.restarts,
        uptime: pid ? Math.round((Date.now() - m.startedAt) / 1000) : null,
        state: pid ? "running" : m.held ? "stopped" : "restarting",
      };
    }));
  }

  private managed(name: unknown): Managed {
    const m = typeof name === "string" ? this.procs.get(name) : undefined;
    if (!m) throw new Error(`service ${JSON.stringify(name)}: not found (known: ${[...this.procs.keys()].join(", ")})`);
    return m;
  }

  /** Stop a process for good (until `startService`). */
  async stopService(name: string): Promise<void> {
    const m = this.managed(name);
    m.held = true;
    if (m.timer) clearTimeout(m.timer);
    m.timer = undefined;
    await this.terminate(m, 10_000);
    this.log.info({ service: m.name }, "stopped by the operator");
  }

  /** Start a stopped process (a running one is left alone); resolves once it answers SERVING. */
  async startService(name: string): Promise<void> {
    const m = this.managed(name);
    if (m.timer) clearTimeout(m.timer);
    m.timer = undefined;
    if (!m.child) {
      m.backoff = MIN_BACKOFF_MS;
      this.spawn(m);
    }
    if (m.name === "nats") return;
    const until = Date.now() + 30_000;
    while ((await this.health.of(m.address, 1000, ownHealthName(m.name))) !== "SERVING") {
      if (Date.now() > until) throw new Error(`${m.name} does not answer SERVING after 30 s`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  async restartService(name: string): Promise<void> {
    await this.stopService(name);
    await this.startService(name);
  }

  /** The control socket: one JSON request line, one JSON answer line. */
  private async listenControl(): Promise<void> {
    const file = controlSocket(this.cfg.state);
    // Another `up` on the same state directory answers there: refuse before starting anything.
    const live = await new Promise<boolean>((resolve) => {
      const c = net.connect(file, () => {
        c.destroy();
        resolve(true);
      });
      c.on("error", () => resolve(false));
    });
    if (live) throw new Error(`another flotilla up is running for ${this.cfg.state} (${file} answers)`);
    fs.rmSync(file, { force: true });
    this.control = net.createServer((conn) => {
      let buf = "";
      conn.setEncoding("utf8");
      conn.on("error", () => undefined);
      conn.on("data", (chunk: string) => {
        buf += chunk;
        const nl = buf.indexOf("\n");
        if (nl < 0) return;
        const line = buf.slice(0, nl);
        buf = "";
        void this.answer(line).then((res) => conn.end(JSON.stringify(res) + "\n"));
      });
    });
    await new Promise<void>((resolve, reject) => {
      this.control!.once("error", reject);
      this.control!.listen(file, () => {
        fs.chmodSync(file, 0o600);
        resolve();
      });
    });
  }

  private async answer(line: string): Promise<{ ok: boolean; error?: string; processes?: ProcessStatus[] }> {
    try {
      const req = JSON.parse(line) as { cmd?: string; service?: string };
      if (this.stopping) throw new Error("the stack is stopping");
      switch (req.cmd) {
        case "ps":
          return { ok: true, processes: await this.status() };
        case "stop":
          await this.stopService(String(req.service));
          return { ok: true };
        case "start":
          await this.startService(String(req.service));
          return { ok: true };
        case "restart":
          await this.restartService(String(req.service));
          return { ok: true };
        default:
          throw new Error(`unknown request ${JSON.stringify(req.cmd)}`);
      }
    } catch (e) {
      return { ok: false, error: (e as Error).message };
    }
  }

  /** SIGTERM every process (services first, NATS last), SIGKILL what is left after `graceMs`. */
  async stop(graceMs = 10_000): Promise<void> {
    this.stopping = true;
    this.control?.close();
    this.health.close();
    fs.rmSync(controlSocket(this.cfg.state), { force: true });
    for (const m of this.procs.values()) if (m.timer) clearTimeout(m.timer);
    const services = [...this.procs.values()].filter((m) => m.name !== "nats");
    await Promise.all(services.map((m) => this.terminate(m, graceMs)));
    const nats = this.procs.get("nats");
    if (nats) await this.terminate(nats, graceMs);
    try {
      fs.unlinkSync(this.stateFile);
    } catch {
      /* gone */
    }
  }

  private terminate(m: Managed, graceMs: number): Promise<void> {
    const c = m.child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return Promise.resolve();
    return new Promise((resolve) => {
      const t = setTimeout(() => c.kill("SIGKILL"), graceMs);
      c.once("exit", () => {
        clearTimeout(t);
        resolve();
      });
      c.kill("SIGTERM");
    });
  }
}
