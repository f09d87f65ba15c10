/**
 * Test harness: a whole Flotilla stack (`bin/flotilla up`) on temporary roots, driven with the real
 * `ctr`. Everything it starts is stopped by PID; mounts under its temporary directory are unmounted.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { background } from "../libs/context";
import { ChannelPool, RpcClient } from "../libs/grpc/client";
import { dialAddress, loadConfig, SERVICE_NAMES, type ServiceName } from "../libs/config";
import { tlsFor } from "../libs/grpc/tls";
import { repoRoot } from "../libs/proto";
import { waitAtMost } from "../libs/sync";

/**
 * The gRPC channels of a test file's process (node --test runs each file in its own): every client a
 * test or its fixtures make goes through it, and `testChannels.close()` drops their connections.
 */
export const testChannels = new ChannelPool();

export interface StackOptions {
  /** Use this NATS server instead of the embedded one. */
  natsUrl?: string;
  /** OTLP/HTTP traces endpoint handed to every process. */
  otlpEndpoint?: string;
  /** `[flotilla] otlp_protocol` (default: the config's, http/protobuf). */
  otlpProtocol?: "http/protobuf" | "http/json";
  /** Give every process a /metrics address on a free port. */
  metrics?: boolean;
  /** More TOML appended to the generated config (tables not already present). */
  extraToml?: string;
  /** Log level for the processes (default "info"). */
  logLevel?: string;
  /** `[flotilla] gateway_read_views` (default true). */
  readViews?: boolean;
  /** More lines for the `[grpc]` table (e.g. `tcp_address = ...`). */
  grpcToml?: string[];
  /** More lines for the `[flotilla]` table (e.g. `gateway_content_reads = false`). */
  flotillaToml?: string[];
  /** More lines for the `[flotilla.nats]` table (credentials, TLS, embedded_*). */
  natsToml?: string[];
}

export interface CtrResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface CtrOptions {
  input?: Buffer | string;
  namespace?: string;
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
}

export interface Stack {
  dir: string;
  root: string;
  state: string;
  socket: string;
  configFile: string;
  natsUrl: string;
  ctr(args: string[], opts?: CtrOptions): Promise<CtrResult>;
  /** Start `ctr` and return the child (for long-running commands such as `ctr events`). */
  ctrSpawn(args: string[], opts?: CtrOptions): ChildProcess;
  pidOf(service: ServiceName | "nats"): number | undefined;
  kill(service: ServiceName | "nats", signal?: NodeJS.Signals): number;
  waitHealthy(service: ServiceName, timeoutMs?: number): Promise<void>;
  /** Wait until the supervisor reports a new PID for `service` and it is healthy. */
  waitRestarted(service: ServiceName, oldPid: number, timeoutMs?: number): Promise<number>;
  address(service: ServiceName): string;
  metricsAddress(service: ServiceName): string;
  logs(): string;
  stop(): Promise<void>;
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function waitFor<T>(what: string, fn: () => Promise<T | undefined> | T | undefined, timeoutMs = 15000, stepMs = 50): Promise<T> {
  const until = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined && v !== false) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}${last ? `: ${(last as Error).message}` : ""}`);
    await sleep(stepMs);
  }
}

export function runCtr(socket: string, args: string[], opts: CtrOptions = {}): Promise<CtrResult> {
  return runCommand("ctr", ["-a", socket, "-n", opts.namespace ?? "default", ...args], opts);
}

/** Run a command to its end with `opts.input` on stdin (killed after `opts.timeoutMs`, 60 s by default). */
export function runCommand(cmd: string, args: string[], opts: Omit<CtrOptions, "namespace"> = {}): Promise<CtrResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env: { ...process.env, ...opts.env }, stdio: ["pipe", "pipe", "pipe"] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on("data", (b: Buffer) => out.push(b));
    child.stderr.on("data", (b: Buffer) => err.push(b));
    const t = setTimeout(() => child.kill("SIGKILL"), opts.timeoutMs ?? 60000);
    child.on("error", reject);
    child.on("close", (code, signal) => {
      clearTimeout(t);
      resolve({ code: code ?? (signal ? 128 : 1), stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() });
    });
    child.stdin.on("error", () => undefined);
    if (opts.input !== undefined) child.stdin.end(opts.input);
    else child.stdin.end();
  });
}

/** Unmount everything mounted below `dir` (deepest first). */
export function unmountBelow(dir: string): void {
  const mounts = fs.readFileSync("/proc/self/mountinfo", "utf8").split("\n").map((l) => l.split(" ")[4]).filter((m): m is string => !!m && (m === dir || m.startsWith(dir + "/")));
  for (const m of mounts.sort((a, b) => b.length - a.length)) spawnSync("umount", ["-l", m]);
}

/** PIDs of processes whose command line mentions `dir` (this stack's shims and helpers). */
export function pidsReferring(dir: string): number[] {
  const out: number[] = [];
  for (const e of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(e) || Number(e) === process.pid) continue;
    try {
      if (fs.readFileSync(`/proc/${e}/cmdline`, "utf8").includes(dir + "/")) out.push(Number(e));
    } catch {
      /* gone */
    }
  }
  return out;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export async function startStack(opts: StackOptions = {}): Promise<Stack> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "flt-"));
  const root = path.join(dir, "root");
  const state = path.join(dir, "state");
  const socket = path.join(dir, "flotilla.sock");
  const configFile = path.join(dir, "config.toml");
  const lines = [
    "version = 2",
    `root = ${JSON.stringify(root)}`,
    `state = ${JSON.stringify(state)}`,
    "[grpc]",
    `address = ${JSON.stringify(socket)}`,
    ...(opts.grpcToml ?? []),
    "[debug]",
    `level = ${JSON.stringify(opts.logLevel ?? "info")}`,
    "[flotilla]",
    `otlp_endpoint = ${JSON.stringify(opts.otlpEndpoint ?? "")}`,
    ...(opts.otlpProtocol ? [`otlp_protocol = ${JSON.stringify(opts.otlpProtocol)}`] : []),
    `gateway_read_views = ${opts.readViews ?? true}`,
    ...(opts.flotillaToml ?? []),
    "[flotilla.nats]",
    `url = ${JSON.stringify(opts.natsUrl ?? "")}`,
    ...(opts.natsToml ?? []),
  ];
  if (opts.metrics) {
    const { freePort } = await import("../cli/supervisor");
    for (const s of SERVICE_NAMES) {
      lines.push(`[flotilla.services.${s}]`, `metrics_address = "127.0.0.1:${await freePort()}"`);
    }
  }
  if (opts.extraToml) lines.push(opts.extraToml);
  fs.writeFileSync(configFile, lines.join("\n") + "\n");
  const cfg = loadConfig(configFile);
  const logFile = path.join(dir, "flotilla.log");
  const logFd = fs.openSync(logFile, "a");
  const sup = spawn(process.execPath, [path.join(repoRoot(), "bin", "flotilla"), "up", "--config", configFile], { stdio: ["ignore", logFd, logFd] });
  fs.closeSync(logFd);
  const stateFile = path.join(state, "supervisor.json");
  const readState = (): { nats_url: string; services: Record<string, number | null> } | undefined => {
    try {
      return JSON.parse(fs.readFileSync(stateFile, "utf8"));
    } catch {
      return undefined;
    }
  };
  const pidOf = (s: string): number | undefined => readState()?.services[s] ?? undefined;
  const address = (s: ServiceName): string => dialAddress(cfg, s);
  // With TLS configured, this test process dials the services as `flotilla` commands do (its own pool).
  const channels = cfg.flotilla.tls.ca ? new ChannelPool(tlsFor(cfg)) : testChannels;
  const health = new Map<string, RpcClient<"grpc.health.v1.Health">>();
  const waitHealthy = async (s: ServiceName, timeoutMs = 60000): Promise<void> => {
    let c = health.get(s);
    if (!c) health.set(s, (c = new RpcClient(channels.get(address(s)), "grpc.health.v1.Health")));
    await waitFor(`${s} to be healthy`, async () => {
      const ctx = { ...background(), deadline: new Date(Date.now() + 1000) };
      const r = await c!.unary(ctx, "Check", { service: "" });
      return r.status === 1 ? true : undefined;
    }, timeoutMs, 100);
  };
  const stack: Stack = {
    dir, root, state, socket, configFile,
    natsUrl: "",
    ctr: (args, o) => runCtr(socket, args, o),
    ctrSpawn: (args, o = {}) => spawn("ctr", ["-a", socket, "-n", o.namespace ?? "default", ...args], { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ...o.env } }),
    pidOf,
    kill: (s, signal = "SIGKILL") => {
      const pid = pidOf(s);
      if (!pid) throw new Error(`${s} is not running`);
      process.kill(pid, signal);
      return pid;
    },
    waitHealthy,
    waitRestarted: async (s, oldPid, timeoutMs = 20000) => {
      const pid = await waitFor(`${s} to restart`, () => {
        const p = pidOf(s);
        return p && p !== oldPid ? p : undefined;
      }, timeoutMs);
      await waitHealthy(s, timeoutMs);
      return pid;
    },
    address,
    metricsAddress: (s) => cfg.flotilla.services[s].metrics_address,
    logs: () => fs.readFileSync(logFile, "utf8"),
    stop: async () => {
      const st = readState();
      if (sup.exitCode === null && sup.signalCode === null) {
        const exited = new Promise<void>((r) => sup.once("exit", () => r()));
        sup.kill("SIGTERM");
        await waitAtMost(exited, 20000);
        if (sup.exitCode === null && sup.signalCode === null) sup.kill("SIGKILL");
      }
      for (const pid of Object.values(st?.services ?? {})) {
        if (pid && alive(pid)) process.kill(pid, "SIGKILL");
      }
      // Shims outlive the tasks process by design (own process group): end this stack's by PID.
      for (const pid of pidsReferring(dir)) process.kill(pid, "SIGKILL");
      channels.close();
      testChannels.close();
      unmountBelow(dir);
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
  try {
    await waitFor("the supervisor state file", () => readState()?.nats_url || undefined, 15000);
    stack.natsUrl = readState()!.nats_url;
    for (const s of SERVICE_NAMES) await waitHealthy(s);
  } catch (e) {
    const logs = fs.existsSync(logFile) ? fs.readFileSync(logFile, "utf8").slice(-4000) : "";
    await stack.stop();
    throw new Error(`stack did not come up: ${(e as Error).message}\n${logs}`);
  }
  return stack;
}

/**
 * Start a standalone nats-server on a free loopback port (for tests that stop and restart NATS); with
 * `jetstreamDir`, with JetStream storing there (the same directory again finds the streams again).
 */
export async function startNats(port?: number, jetstreamDir?: string): Promise<{ url: string; port: number; pid: number; stop(): Promise<void> }> {
  const { freePort, waitForPort } = await import("../cli/supervisor");
  const p = port ?? (await freePort());
  const child = spawn("nats-server", ["-a", "127.0.0.1", "-p", String(p), ...(jetstreamDir ? ["-js", "-sd", jetstreamDir] : [])], { stdio: "ignore" });
  await waitForPort(p, 10000);
  return {
    url: `nats://127.0.0.1:${p}`,
    port: p,
    pid: child.pid!,
    stop: () => new Promise((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) return resolve();
      child.once("exit", () => resolve());
      child.kill("SIGKILL");
    }),
  };
}
