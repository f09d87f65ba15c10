/**
 * `flotilla up`: runs the whole stack in the foreground. It starts its own nats-server (JetStream, on
 * loopback) when no NATS URL is configured, starts one process per service, restarts a crashed one
 * with exponential backoff, and stops everything cleanly on SIGINT/SIGTERM.
 * The PIDs it manages are kept in `<state>/supervisor.json` (write-then-rename) for operators and tests.
 */
import { spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as path from "node:path";
import type { Logger } from "pino";
import { SERVICE_NAMES, type Config, type ServiceName } from "../libs/config";

/**
 * Node flags every service process runs with (the systemd units and the compose file pass the same).
 * `--initial-old-space-size=64`: V8 starts with an old-generation limit of a few MiB and, on the data
 * paths (content writes, registry downloads, gateway relays), starts a full mark-compact every few
 * tens of milliseconds; a 64 MiB start cuts them from ~10 to ~1 per 50 MB pull and halves the gateway's
 * and the content process's CPU per ingested MiB. Idle processes stay as small as before.
 */
export const SERVICE_NODE_FLAGS = ["--initial-old-space-size=64"];
import { repoRoot } from "../libs/proto";

const MIN_BACKOFF_MS = 200;
const MAX_BACKOFF_MS = 10_000;
const STABLE_AFTER_MS = 30_000;

interface Managed {
  name: string;
  argv: string[];
  env: NodeJS.ProcessEnv;
  child?: ChildProcess;
  startedAt: number;
  backoff: number;
  restarts: number;
  timer?: NodeJS.Timeout;
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const a = s.address() as net.AddressInfo;
      s.close(() => resolve(a.port));
    });
  });
}

export async function waitForPort(port: number, timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const c = net.connect(port, "127.0.0.1");
      c.once("connect", () => { c.destroy(); resolve(true); });
      c.once("error", () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > until) throw new Error(`nothing listens on 127.0.0.1:${port} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export class Supervisor {
  private readonly procs = new Map<string, Managed>();
  private stopping = false;
  private natsUrl = "";
  private readonly stateFile: string;

  constructor(private readonly cfg: Config, private readonly configFile: string | undefined, private readonly log: Logger) {
    this.stateFile = path.join(cfg.state, "supervisor.json");
  }

  private writeState(): void {
    const services: Record<string, number | null> = {};
    for (const [n, m] of this.procs) services[n] = m.child?.pid ?? null;
    const tmp = `${this.stateFile}.tmp`;
    fs.writeFileSync(tmp, JSON.stringify({ pid: process.pid, nats_url: this.natsUrl, services }, null, 2));
    fs.renameSync(tmp, this.stateFile);
  }

  private spawn(m: Managed): void {
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

  private add(name: string, argv: string[], env: NodeJS.ProcessEnv): void {
    const m: Managed = { name, argv, env, startedAt: 0, backoff: MIN_BACKOFF_MS, restarts: 0 };
    this.procs.set(name, m);
    this.spawn(m);
  }

  async start(): Promise<void> {
    fs.mkdirSync(this.cfg.state, { recursive: true, mode: 0o711 });
    fs.mkdirSync(this.cfg.root, { recursive: true, mode: 0o711 });
    this.natsUrl = this.cfg.flotilla.nats.url;
    if (!this.natsUrl) {
      const port = this.cfg.flotilla.nats.embedded_port || (await freePort());
      const storeDir = path.join(this.cfg.root, "nats");
      fs.mkdirSync(storeDir, { recursive: true });
      this.natsUrl = `nats://127.0.0.1:${port}`;
      this.add("nats", ["nats-server", "-a", "127.0.0.1", "-p", String(port), "-js", "-sd", storeDir], process.env);
      await waitForPort(port, 10_000);
    }
    const env = { ...process.env, FLOTILLA_NATS_URL: this.natsUrl };
    const root = repoRoot();
    const cfgArgs = this.configFile ? ["--config", this.configFile] : [];
    const order: ServiceName[] = [...SERVICE_NAMES.filter((s) => s !== "gateway"), "gateway"];
    // FLOTILLA_NODE_ARGS: extra Node flags for every service process (profiling, heap limits), after ours.
    const nodeArgs = [...SERVICE_NODE_FLAGS, ...(process.env.FLOTILLA_NODE_ARGS ?? "").split(/\s+/).filter(Boolean)];
    for (const s of order) {
      this.add(s, [process.execPath, ...nodeArgs, path.join(root, "dist", "services", s, "main.js"), ...cfgArgs], env);
    }
    this.log.info({ nats: this.natsUrl, socket: this.cfg.grpc.address, state: this.stateFile }, "flotilla is up");
  }

  /** SIGTERM every process (services first, NATS last), SIGKILL what is left after `graceMs`. */
  async stop(graceMs = 10_000): Promise<void> {
    this.stopping = true;
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
