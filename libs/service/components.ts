/**
 * The components (containerd's plugins) a process runs, declared in one place per process: type, id,
 * what they require, the schema of their `[plugins."<type>.<id>"]` table. `runService` checks their
 * tables at start, gives each its checked config, and reports them for introspection from this
 * declaration; `flotilla up` checks every process's tables before starting any.
 */
import type { PluginConfigDecl, Schema } from "../config";
import type { Platform, PluginInfo } from "./plugins";

export interface Component<C = unknown> extends PluginConfigDecl {
  requires?: string[];
  /** Reported as is; a process that knows them only at start gives them in `RunningService.status`. */
  platforms?: Platform[];
  capabilities?: string[];
  config?: Schema<C>;
}

/** Declare a component (keeps its exact type, so its config's type follows it to `sc.configOf`). */
export function component<T extends Component<unknown>>(c: T): T {
  return c;
}

/** The checked config type of a component. */
export type ConfigOf<T> = T extends { config: Schema<infer C> } ? C : Record<string, never>;

export const uriOf = (c: { type: string; id: string }): string => `${c.type}.${c.id}`;

/** What a component became at start: its exports, why it failed, or left out (disabled). */
export interface ComponentStatus {
  exports?: Record<string, string>;
  platforms?: Platform[];
  initErr?: { code: number; message: string };
  disabled?: boolean;
}

/** The plugins to report: the declared components, with what start said of each (by `type.id`). */
export function componentPlugins(components: readonly Component<unknown>[], status: Record<string, ComponentStatus> = {}): PluginInfo[] {
  return components.flatMap((c) => {
    const st = status[uriOf(c)] ?? {};
    if (st.disabled) return [];
    const p: PluginInfo = { type: c.type, id: c.id };
    if (c.requires) p.requires = c.requires;
    const platforms = st.platforms ?? c.platforms;
    if (platforms) p.platforms = platforms;
    if (c.capabilities) p.capabilities = c.capabilities;
    if (st.exports) p.exports = st.exports;
    if (st.initErr) p.initErr = st.initErr;
    return [p];
  });
}
