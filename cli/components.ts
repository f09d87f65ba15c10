/**
 * Every process's components, for checking a whole config before any process starts (`flotilla up`):
 * each process checks its own tables again when it starts alone (systemd, compose).
 */
import { errInvalidArgument } from "../libs/errdefs";
import { validatePlugins, type Config } from "../libs/config";
import { placementError } from "../libs/topology";
import type { Component } from "../libs/service/components";
import { CONTENT_COMPONENTS } from "../services/content/components";
import { CRI_COMPONENTS } from "../services/cri/components";
import { GATEWAY_COMPONENTS } from "../services/gateway/components";
import { IMAGES_COMPONENTS } from "../services/images/components";
import { SANDBOX_COMPONENTS } from "../services/sandbox/components";
import { SNAPSHOTS_COMPONENTS } from "../services/snapshots/components";
import { TASKS_COMPONENTS } from "../services/tasks/components";
import { TRANSFER_COMPONENTS } from "../services/transfer/components";

export const ALL_COMPONENTS: readonly Component<unknown>[] = [
  ...CONTENT_COMPONENTS,
  ...SNAPSHOTS_COMPONENTS,
  ...IMAGES_COMPONENTS,
  ...TASKS_COMPONENTS,
  ...TRANSFER_COMPONENTS,
  ...SANDBOX_COMPONENTS,
  ...CRI_COMPONENTS,
  ...GATEWAY_COMPONENTS,
];

/**
 * Check every plugin table of `cfg` Flotilla implements (throws naming the first wrong key) and the
 * placement its addresses describe (the node group on one host); returns
 * the tables it does not implement (containerd's CRI tables, ...), which are ignored as containerd
 * ignores tables of plugins it does not have.
 */
export function checkConfig(cfg: Config): string[] {
  const ignored = validatePlugins(cfg, ALL_COMPONENTS);
  const placement = placementError(cfg);
  if (placement) throw errInvalidArgument(`config${cfg.source ? ` ${cfg.source}` : ""}: ${placement}`);
  return ignored;
}

/**
 * `flotilla config check [-c FILE]`: the check `up` makes before it starts anything, alone. Exits 0
 * when the config would start (naming the plugin tables it would ignore), 1 with the error otherwise.
 */
export async function configCommand(argv: string[]): Promise<number> {
  const { parseArgs } = await import("node:util");
  const { configPathFromArgv, loadConfig } = await import("../libs/config");
  try {
    const { values: v, positionals } = parseArgs({ args: argv, allowPositionals: true, strict: true, options: { config: { type: "string", short: "c" }, address: { type: "string", short: "a" }, namespace: { type: "string", short: "n" } } });
    if (positionals[0] !== "check" || positionals.length > 1) throw new Error("usage: flotilla config check [-c FILE]");
    const file = v.config ?? configPathFromArgv(argv);
    const name = file ?? "(built-in defaults)";
    for (const t of checkConfig(loadConfig(file))) process.stdout.write(`config ${name}: ignoring [plugins.${JSON.stringify(t)}]: not a plugin of Flotilla\n`);
    process.stdout.write(`config ${name}: ok\n`);
    return 0;
  } catch (e) {
    process.stderr.write(`flotilla config: ${(e as Error).message}\n`);
    return 1;
  }
}
