/**
 * A nats-server of a test's own, as an operator runs one outside the stack: a config file with TLS
 * (certificates from `bin/flotilla certs init`: `nats.pem` served, clients verified against `ca.pem`)
 * and credentials. Stopped by PID.
 */
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";

export interface NatsServerOptions {
  /** Directory for its config, log and JetStream store. */
  dir: string;
  host: string;
  port: number;
  /** `certs init` directory: TLS with client certificates verified when given. */
  certs?: string;
  user?: string;
  password?: string;
  token?: string;
  /** Public nkeys of users allowed in. */
  nkeys?: string[];
  /** A command the server runs under (e.g. `ip netns exec NS`). */
  wrap?: string[];
  /** A member of a cluster: its route port on `host` and the other members' route URLs. */
  cluster?: { name: string; port: number; routes: string[] };
}

export interface NatsServer {
  pid: number;
  /** What it printed (its log goes to stderr). */
  log(): string;
  stop(): Promise<void>;
}

/** nats-server's config file text for `o`. */
export function natsServerConfig(o: NatsServerOptions): string {
  const q = JSON.stringify;
  const lines = [`listen: ${q(`${o.host}:${o.port}`)}`, `jetstream { store_dir: ${q(path.join(o.dir, "js"))} }`];
  if (o.certs) {
    const f = (n: string): string => q(path.join(o.certs!, n));
    lines.push(`tls { cert_file: ${f("nats.pem")}, key_file: ${f("nats-key.pem")}, ca_file: ${f("ca.pem")}, verify: true, timeout: 5 }`);
  }
  if (o.cluster) lines.push(`server_name: ${q(`${o.cluster.name}-${o.port}`)}`, `cluster { name: ${q(o.cluster.name)}, listen: ${q(`${o.host}:${o.cluster.port}`)}, routes: [${o.cluster.routes.map((r) => q(r)).join(", ")}] }`);
  if (o.user) lines.push(`authorization { user: ${q(o.user)}, password: ${q(o.password ?? "")} }`);
  else if (o.token) lines.push(`authorization { token: ${q(o.token)} }`);
  else if (o.nkeys?.length) lines.push(`authorization { users: [ ${o.nkeys.map((k) => `{ nkey: ${q(k)} }`).join(", ")} ] }`);
  return lines.join("\n") + "\n";
}

/** Start nats-server with `o`'s config; resolves once it logs that it is ready. */
export async function startNatsServer(o: NatsServerOptions): Promise<NatsServer> {
  fs.mkdirSync(o.dir, { recursive: true });
  const conf = path.join(o.dir, "nats.conf");
  fs.writeFileSync(conf, natsServerConfig(o));
  const [cmd, ...args] = [...(o.wrap ?? []), "nats-server", "-c", conf];
  const child = spawn(cmd!, args, { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  child.stdout.on("data", (b: Buffer) => (out += b.toString()));
  child.stderr.on("data", (b: Buffer) => (out += b.toString()));
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`nats-server not ready after 15 s:\n${out}`)), 15_000);
    const check = (): void => {
      if (out.includes("Server is ready")) {
        clearTimeout(t);
        resolve();
      }
    };
    child.stderr.on("data", check);
    child.stdout.on("data", check);
    child.once("exit", (code) => {
      clearTimeout(t);
      reject(new Error(`nats-server exited (${code}):\n${out}`));
    });
  });
  return {
    pid: child.pid!,
    log: () => out,
    stop: () => new Promise((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) return resolve();
      child.once("exit", () => resolve());
      child.kill("SIGKILL");
    }),
  };
}
