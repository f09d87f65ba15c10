/**
 * Which shim runs a runtime name. Configuration (`[plugins."io.containerd.runtime.v2.task"]`):
 *
 *   socket_dir = ""                  # where Flotilla's shim listens (default <state>/tasks/s)
 *   runc_root = ""                   # OCI runtime state root of Flotilla's shim (default <state>/tasks/runc)
 *   shim_node_options = [...]        # V8/Node flags for Flotilla's shim (small heaps by default)
 *   warm_shims = 2                   # Flotilla shims started ahead of time (0: `shim start` each time)
 *   shim_group_size = 1              # containers one Flotilla shim serves per namespace (memory vs isolation)
 *   [plugins."io.containerd.runtime.v2.task".runtimes."io.containerd.runc.v2"]
 *     shim = "flotilla"              # Flotilla's TypeScript shim (the default for the runc runtimes)
 *     runtime_binary = "runc"        # the OCI runtime it drives: "runc" or "crun"
 *     runtime_args = []              # global options for it, e.g. ["--cgroup-manager=disabled"] for crun
 *   [plugins."io.containerd.runtime.v2.task".runtimes."io.containerd.runc-debian.v2"]
 *     shim = "/usr/bin/containerd-shim-runc-v2"   # any external runtime v2 shim binary
 *
 * A name with no entry resolves as containerd does: an absolute path is the binary; otherwise
 * `io.containerd.<x>.<y>` means `containerd-shim-<x>-<y>` looked up in $PATH. The legacy v1 runtime
 * (`io.containerd.runtime.v1.linux`) is not a v2 shim: containerd 1.6 starts `containerd-shim` for it
 * and fails with exec's error when that is not installed; Flotilla answers the same then, and
 * NotImplemented when it is (the v1 shim protocol is not spoken here).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { errInvalidArgument, errNotFound, errNotImplemented, ErrorCodes, FlotillaError } from "#libs/errdefs";
import { repoRoot } from "#libs/proto";
import type { ConfigOf } from "#libs/service/components";
import type { RUNTIME_TASK } from "../../components";

export { RUNTIME_PLUGIN } from "../../components";
export const BUILTIN_SHIM = "flotilla";
/** containerd 1.x's built-in v1 runtime (containerd-shim), gone from v2's shim API. */
export const LEGACY_V1_RUNTIME = "io.containerd.runtime.v1.linux";

export interface ShimCommand {
  /** argv before the shim flags: `[binary]`, or `[node, ...flags, main.js]` for Flotilla's shim. */
  argv: string[];
  builtin: boolean;
  /** Extra environment for the shim. */
  env: Record<string, string>;
  /** What `shim-binary-path` records. */
  binaryPath: string;
}

export interface RuntimeEntry {
  shim: string;
  runtimeBinary?: string;
  /** Global options for every OCI runtime invocation (e.g. crun's `--cgroup-manager=disabled`). */
  runtimeArgs?: string[];
}

export interface RuntimesConfig {
  socketDir: string;
  runcRoot: string;
  nodeOptions: string[];
  /** Flotilla shims kept started ahead of time per runtime in use (0 = use `shim start` every time). */
  warmShims: number;
  /** Containers one Flotilla shim may serve in a namespace (1 = one shim per container). */
  shimGroupSize: number;
  runtimes: Record<string, RuntimeEntry>;
}

/** Two: a burst of creates (`ctr run -d` in a loop) finds one ready while the next starts. */
export const DEFAULT_WARM_SHIMS = 2;

export const DEFAULT_NODE_OPTIONS = ["--max-semi-space-size=1", "--max-old-space-size=64"];

const DEFAULT_RUNTIMES: Record<string, RuntimeEntry> = {
  "io.containerd.runc.v2": { shim: BUILTIN_SHIM, runtimeBinary: "runc" },
  "io.containerd.runc.v1": { shim: BUILTIN_SHIM, runtimeBinary: "runc" },
  "io.containerd.crun.v2": { shim: BUILTIN_SHIM, runtimeBinary: "crun" },
  // Flotilla's shim by its own name (bin/containerd-shim-flotilla-v2, e.g. a sandbox's shim).
  "io.containerd.flotilla.v2": { shim: BUILTIN_SHIM, runtimeBinary: "runc" },
};

/** The runtimes from the checked `[plugins."io.containerd.runtime.v2.task"]` table, defaults for what it leaves out. */
export function runtimesConfig(raw: ConfigOf<typeof RUNTIME_TASK>, state: string): RuntimesConfig {
  const runtimes: Record<string, RuntimeEntry> = { ...DEFAULT_RUNTIMES };
  for (const [name, e] of Object.entries(raw.runtimes ?? {})) {
    if (e.shim === undefined) throw errInvalidArgument(`config: runtime ${JSON.stringify(name)} needs a shim (a path or "${BUILTIN_SHIM}")`);
    runtimes[name] = {
      shim: e.shim,
      ...(e.runtime_binary !== undefined ? { runtimeBinary: e.runtime_binary } : {}),
      ...(e.runtime_args !== undefined ? { runtimeArgs: e.runtime_args } : {}),
    };
  }
  return {
    warmShims: raw.warm_shims ?? DEFAULT_WARM_SHIMS,
    shimGroupSize: raw.shim_group_size ?? 1,
    socketDir: raw.socket_dir || path.join(state, "s"),
    runcRoot: raw.runc_root || path.join(state, "runc"),
    nodeOptions: raw.shim_node_options ?? DEFAULT_NODE_OPTIONS,
    runtimes,
  };
}

/** containerd's BinaryName: `io.containerd.runc.v2` -> `containerd-shim-runc-v2`. */
export function binaryName(runtime: string): string {
  const parts = runtime.split(".");
  if (parts.length < 2) return "";
  return `containerd-shim-${parts[parts.length - 2]}-${parts[parts.length - 1]}`;
}

function lookPath(name: string): string | undefined {
  for (const dir of (process.env.PATH ?? "").split(":")) {
    if (!dir) continue;
    const p = path.join(dir, name);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      if (fs.statSync(p).isFile()) return p;
    } catch {
      /* not here */
    }
  }
  return undefined;
}

export function builtinShimMain(): string {
  return path.join(repoRoot(), "dist", "services", "shim", "main.js");
}

export class RuntimeResolver {
  private readonly cache = new Map<string, ShimCommand>();

  constructor(private readonly cfg: RuntimesConfig) {}

  /** The shim for a runtime name (or an absolute shim path); NotFound when none is installed. */
  resolve(runtime: string): ShimCommand {
    const hit = this.cache.get(runtime);
    if (hit) return hit;
    if (!runtime) throw errInvalidArgument("no runtime name");
    const entry = this.cfg.runtimes[runtime];
    if (runtime === LEGACY_V1_RUNTIME && !entry) {
      if (!lookPath("containerd-shim")) throw new FlotillaError(ErrorCodes.Unknown, 'exec: "containerd-shim": executable file not found in $PATH: unknown');
      throw errNotImplemented(`runtime ${JSON.stringify(runtime)} (containerd-shim, the v1 shim API) is not supported; use io.containerd.runc.v2`);
    }
    let cmd: ShimCommand;
    if (entry && entry.shim === BUILTIN_SHIM) {
      const main = builtinShimMain();
      cmd = {
        argv: [process.execPath, ...this.cfg.nodeOptions, main],
        builtin: true,
        env: {
          FLOTILLA_SHIM_SOCKET_DIR: this.cfg.socketDir,
          FLOTILLA_RUNC_ROOT: this.cfg.runcRoot,
          FLOTILLA_RUNC_BINARY: entry.runtimeBinary ?? "runc",
          ...(entry.runtimeArgs?.length ? { FLOTILLA_RUNC_ARGS: JSON.stringify(entry.runtimeArgs) } : {}),
        },
        binaryPath: main,
      };
    } else {
      const target = entry ? entry.shim : runtime;
      let bin: string | undefined;
      if (path.isAbsolute(target)) {
        if (!fs.existsSync(target)) throw errNotFound(`failed to resolve runtime path: invalid custom binary path ${JSON.stringify(target)}`);
        bin = target;
      } else {
        if (target.includes("/")) throw errInvalidArgument(`invalid runtime name ${target}, correct runtime name should be either format like \`io.containerd.runc.v1\` or a full path to the binary`);
        const name = entry ? target : binaryName(target);
        if (!name) throw errInvalidArgument(`invalid runtime name ${target}, correct runtime name should be either format like \`io.containerd.runc.v1\` or a full path to the binary`);
        bin = lookPath(name);
        if (!bin) throw errNotFound(`failed to resolve runtime path: runtime ${JSON.stringify(runtime)} binary not installed ${JSON.stringify(name)}`);
      }
      cmd = { argv: [bin], builtin: false, env: {}, binaryPath: bin };
    }
    this.cache.set(runtime, cmd);
    return cmd;
  }

  /** The command recorded in a bundle (`shim-binary-path`), for shims found after a restart. */
  fromBinaryPath(p: string): ShimCommand {
    if (p === builtinShimMain() || p.endsWith("/dist/services/shim/main.js")) {
      const def = this.resolve("io.containerd.runc.v2");
      return { ...def, argv: [process.execPath, ...this.cfg.nodeOptions, p], binaryPath: p };
    }
    return { argv: [p], builtin: false, env: {}, binaryPath: p };
  }
}
