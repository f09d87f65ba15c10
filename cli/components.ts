/**
 * Every process's components, for checking a whole config before any process starts (`flotilla up`):
 * each process checks its own tables again when it starts alone (systemd, compose).
 */
import { validatePlugins, type Config } from "../libs/config";
import type { Component } from "../libs/service/components";
import { CONTENT_COMPONENTS } from "../services/content/components";
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
  ...GATEWAY_COMPONENTS,
];

/**
 * Check every plugin table of `cfg` Flotilla implements (throws naming the first wrong key); returns
 * the tables it does not implement (containerd's CRI tables, ...), which are ignored as containerd
 * ignores tables of plugins it does not have.
 */
export function checkConfig(cfg: Config): string[] {
  return validatePlugins(cfg, ALL_COMPONENTS);
}
