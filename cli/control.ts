/**
 * `flotilla ps` and `flotilla stop|start|restart SERVICE...`: requests to a running `flotilla up`
 * over its control socket `<state>/supervisor.sock` (the state directory of the same config);
 * `flotilla health SERVICE...` asks the services themselves.
 */
import * as net from "node:net";
import { parseArgs } from "node:util";
import { configPathFromArgv, dialAddress, loadConfig, SERVICE_NAMES, type ServiceName } from "../libs/config";
import { tlsFor } from "../libs/grpc/tls";
import { controlSocket, HealthChecks, ownHealthName, type ProcessStatus } from "./supervisor";
import { table } from "./table";

interface Answer {
  ok: boolean;
  error?: string;
  processes?: ProcessStatus[];
}

/** One request, one answer line. */
function ask(socket: string, req: Record<string, unknown>, timeoutMs = 60_000): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const c = net.connect(socket);
    let buf = "";
    const t = setTimeout(() => c.destroy(new Error(`no answer from ${socket} after ${timeoutMs} ms`)), timeoutMs);
    c.setEncoding("utf8");
    c.on("connect", () => c.write(JSON.stringify(req) + "\n"));
    c.on("data", (d: string) => (buf += d));
    c.on("error", (e: NodeJS.ErrnoException) => {
      clearTimeout(t);
      reject(e.code === "ENOENT" || e.code === "ECONNREFUSED" ? new Error(`no \`flotilla up\` is running for this config (${socket}: ${e.code})`) : e);
    });
    c.on("end", () => {
      clearTimeout(t);
      try {
        resolve(JSON.parse(buf) as Answer);
      } catch {
        reject(new Error(`bad answer from ${socket}: ${JSON.stringify(buf.slice(0, 200))}`));
      }
    });
  });
}

function uptime(secs: number | null): string {
  if (secs === null) return "-";
  if (secs < 120) return `${secs}s`;
  if (secs < 7200) return `${Math.floor(secs / 60)}m${secs % 60}s`;
  return `${Math.floor(secs / 3600)}h${Math.floor((secs % 3600) / 60)}m`;
}

/**
 * `flotilla health SERVICE...`: each service's grpc.health.v1 at its configured address (the
 * readiness `up` waits for); exit 0 only when all answer SERVING. For probes, e.g. compose healthchecks.
 */
export async function healthCommand(argv: string[]): Promise<number> {
  try {
    const { values: v, positionals } = parseArgs({ args: argv, allowPositionals: true, strict: true, options: { config: { type: "string", short: "c" }, address: { type: "string", short: "a" }, namespace: { type: "string", short: "n" } } });
    const cfg = loadConfig(v.config ?? configPathFromArgv(argv));
    if (positionals.length === 0) throw new Error(`health needs a SERVICE (${SERVICE_NAMES.join(", ")})`);
    let rc = 0;
    const checks = new HealthChecks(tlsFor(cfg));
    try {
      for (const s of positionals) {
        if (!(SERVICE_NAMES as readonly string[]).includes(s)) throw new Error(`service ${JSON.stringify(s)}: not found`);
        const h = await checks.of(dialAddress(cfg, s as ServiceName), 3000, ownHealthName(s));
        process.stdout.write(`${s} ${h}\n`);
        if (h !== "SERVING") rc = 1;
      }
    } finally {
      checks.close();
    }
    return rc;
  } catch (e) {
    process.stderr.write(`flotilla health: ${(e as Error).message}\n`);
    return 1;
  }
}

/** Entry point for `flotilla ps|stop|start|restart`; resolves with the exit code. */
export async function controlCommand(cmd: "ps" | "stop" | "start" | "restart", argv: string[]): Promise<number> {
  try {
    const { values: v, positionals } = parseArgs({
      args: argv, allowPositionals: true, strict: true,
      options: { config: { type: "string", short: "c" }, address: { type: "string", short: "a" }, namespace: { type: "string", short: "n" }, json: { type: "boolean" } },
    });
    const socket = controlSocket(loadConfig(v.config ?? configPathFromArgv(argv)).state);
    if (cmd === "ps") {
      const a = await ask(socket, { cmd: "ps" });
      if (!a.ok) throw new Error(a.error);
      const ps = a.processes ?? [];
      if (v.json) process.stdout.write(JSON.stringify(ps, null, 2) + "\n");
      else {
        const rows = [["NAME", "PID", "STATE", "HEALTH", "RESTARTS", "UPTIME", "ADDRESS"]];
        for (const p of ps) rows.push([p.name, p.pid ? String(p.pid) : "-", p.state, p.health, String(p.restarts), uptime(p.uptime), p.address]);
        process.stdout.write(table(rows) + "\n");
      }
      return 0;
    }
    if (positionals.length === 0) throw new Error(`${cmd} needs a SERVICE (see flotilla ps)`);
    let rc = 0;
    for (const service of positionals) {
      const a = await ask(socket, { cmd, service });
      if (a.ok) process.stdout.write(service + "\n");
      else {
        process.stderr.write(`flotilla ${cmd} ${service}: ${a.error}\n`);
        rc = 1;
      }
    }
    return rc;
  } catch (e) {
    process.stderr.write(`flotilla ${cmd}: ${(e as Error).message}\n`);
    return 1;
  }
}
