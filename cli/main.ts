/** The `flotilla` command. */
import { parseArgs } from "node:util";
import { loadConfig, SERVICE_NAMES, type ServiceName } from "../libs/config";
import { createLogger } from "../libs/log";
// Each command's module is loaded when that command runs: `up` starts the stack before anything else
// happens, and loading every client command first (some 60 modules) delayed it.

const USAGE = `usage: flotilla [global options] <command> [options]

commands:
  up [--config FILE] [--only SERVICE,...]
                       run the whole stack in the foreground (Ctrl-C stops it), or only these
                       services (the others run elsewhere; needs [flotilla.nats] url)
  ps                   the processes of a running \`up\`: pid, address, health, restarts, uptime
  stop|start|restart SERVICE...
                       stop one service of a running \`up\` for good, start it again, or both
  health SERVICE...    exit 0 when each service's grpc.health.v1 answers SERVING (for probes)
  images pull|push|import|export|tag ...
                       move images through the Transfer API, with live progress
  sandbox run|ls|inspect|stop|rm ...
                       pod sandboxes through the Sandbox API
  run --sandbox ID IMAGE [CMD...]
                       run a container inside a sandbox
  network ls|create|rm|inspect ...
                       the CNI networks sandboxes attach to
  events [--since TIME|--from SEQ] [--filter F]... [--follow]
                       the stack's events from its JetStream stream, printed as \`ctr events\` does
  config check         check the config as \`up\` does before it starts anything
  certs init DIR [--host NAME|IP]...
                       a CA and a certificate per process for mutual TLS (openssl)
  help                 show this text

global options (before or after the command):
  -a, --address SOCKET   the containerd API socket (default: the config's [grpc] address)
  -n, --namespace NS     namespace (default "default")
  -c, --config FILE      Flotilla config (default: env FLOTILLA_CONFIG, else the built-in defaults)
`;

/** The global options, spelled as ctr spells them. */
const GLOBALS: Record<string, "address" | "namespace" | "config"> = {
  "-a": "address", "--address": "address", "-n": "namespace", "--namespace": "namespace", "-c": "config", "--config": "config",
};

/**
 * Split the global options given before the command from the rest. They are handed to the command
 * ahead of its own arguments, so the same option given after the command wins.
 */
export function splitGlobals(argv: readonly string[]): { globals: string[]; cmd: string | undefined; rest: string[] } {
  const globals: string[] = [];
  let i = 0;
  for (; i < argv.length; i++) {
    const a = argv[i]!;
    const eq = a.startsWith("--") ? a.indexOf("=") : -1;
    const name = eq > 0 ? a.slice(0, eq) : a;
    const key = GLOBALS[name];
    if (!key) break;
    const val = eq > 0 ? a.slice(eq + 1) : argv[++i];
    if (val === undefined) throw new Error(`option ${name} needs a value`);
    globals.push(`--${key}`, val);
  }
  return { globals, cmd: argv[i], rest: argv.slice(i + 1) };
}

async function up(args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: { config: { type: "string", short: "c" }, only: { type: "string" } }, strict: true });
  const cfg = loadConfig(values.config);
  const log = createLogger("supervisor", cfg.debug.level);
  let only: ServiceName[] | undefined;
  if (values.only !== undefined) {
    const names = values.only.split(",").map((s) => s.trim()).filter(Boolean);
    const unknown = names.filter((n) => !(SERVICE_NAMES as readonly string[]).includes(n));
    if (!names.length || unknown.length) throw new Error(`up --only: ${unknown.length ? `unknown service ${unknown.join(", ")}` : "no service named"} (services: ${SERVICE_NAMES.join(", ")})`);
    only = names as ServiceName[];
  }
  const { Supervisor } = await import("./supervisor");
  const sup = new Supervisor(cfg, values.config ? cfg.source : undefined, log, only);
  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, "stopping the stack");
    void sup.stop().then(() => {
      log.info("stopped");
      process.exit(0);
    });
  };
  process.on("SIGINT", () => stop("SIGINT"));
  process.on("SIGTERM", () => stop("SIGTERM"));
  await sup.start();
  await new Promise(() => undefined);
  return 0;
}

export async function main(argv: string[]): Promise<number> {
  let split;
  try {
    split = splitGlobals(argv);
  } catch (e) {
    process.stderr.write(`flotilla: ${(e as Error).message}\n${USAGE}`);
    return 1;
  }
  const { globals, cmd, rest } = split;
  // Commands with a subcommand take their options after it (`images pull -a SOCK ...`); global
  // options between the two (`images -n NS pull ...`) are moved there too.
  const sub = (): string[] => {
    const inner = splitGlobals(rest);
    return inner.cmd === undefined ? rest : [inner.cmd, ...globals, ...inner.globals, ...inner.rest];
  };
  switch (cmd) {
    case "up":
      return up([...globals, ...rest]);
    case "images":
      return (await import("./images")).imagesCommand(sub());
    case "sandbox":
      return (await import("./sandbox")).sandboxCommand(sub());
    case "network":
      return (await import("./network")).networkCommand(sub());
    case "certs":
      return (await import("./certs")).certsCommand([...globals, ...rest]);
    case "run":
      return (await import("./sandbox")).runCommand([...globals, ...rest]);
    case "health":
      return (await import("./control")).healthCommand([...globals, ...rest]);
    case "events":
      return (await import("./events")).eventsCommand([...globals, ...rest]);
    case "config":
      return (await import("./components")).configCommand([...globals, ...rest]);
    case "ps":
    case "stop":
    case "start":
    case "restart":
      return (await import("./control")).controlCommand(cmd, [...globals, ...rest]);
    case undefined:
    case "help":
    case "--help":
    case "-h":
      process.stdout.write(USAGE);
      return cmd === undefined ? 1 : 0;
    default:
      process.stderr.write(`flotilla: unknown command ${JSON.stringify(cmd)}\n${USAGE}`);
      return 1;
  }
}
