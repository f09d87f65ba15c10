/** The `flotilla` command. */
import { parseArgs } from "node:util";
import { loadConfig } from "../libs/config";
import { createLogger } from "../libs/log";
import { imagesCommand } from "./images";
import { runCommand, sandboxCommand } from "./sandbox";
import { Supervisor } from "./supervisor";

const USAGE = `usage: flotilla <command> [options]

commands:
  up [--config FILE]   run the whole stack in the foreground (Ctrl-C stops it)
  images pull|push|import|export|tag ...
                       move images through the Transfer API, with live progress
  sandbox run|ls|inspect|stop|rm ...
                       pod sandboxes through the Sandbox API
  run --sandbox ID IMAGE [CMD...]
                       run a container inside a sandbox
  help                 show this text
`;

async function up(args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: { config: { type: "string", short: "c" } }, strict: true });
  const cfg = loadConfig(values.config);
  const log = createLogger("supervisor", cfg.debug.level);
  const sup = new Supervisor(cfg, values.config ? cfg.source : undefined, log);
  let stopping: Promise<void> | undefined;
  const stop = (signal: string): void => {
    if (stopping) return;
    log.info({ signal }, "stopping the stack");
    stopping = sup.stop().then(() => {
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
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case "up":
      return up(rest);
    case "images":
      return imagesCommand(rest);
    case "sandbox":
      return sandboxCommand(rest);
    case "run":
      return runCommand(rest);
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
