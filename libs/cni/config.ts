/**
 * CNI network configuration: loading a config directory the way libcni and containerd's CRI do
 * (`*.conf`, `*.conflist`, `*.json`, sorted by file name; the first valid network wins unless one is
 * named), and validating it before anything is set up, so a broken config fails cleanly.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { errFailedPrecondition, errInvalidArgument } from "../errdefs";

/** A plugin entry of a network list (`type` names the executable). */
export type PluginConf = Record<string, unknown> & { type: string };

export interface NetworkConfList {
  cniVersion: string;
  name: string;
  plugins: PluginConf[];
  disableCheck?: boolean;
  /** Where it came from, for messages. */
  source: string;
}

export const SUPPORTED_CNI_VERSIONS = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] as const;

const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

/** Parse and validate a `.conflist` (or a single-plugin `.conf`, wrapped as a list) from text. */
export function parseNetworkConf(text: string, source: string): NetworkConfList {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw errInvalidArgument(`cni config ${source}: invalid JSON: ${(e as Error).message}`);
  }
  if (!doc || typeof doc !== "object" || Array.isArray(doc)) throw errInvalidArgument(`cni config ${source}: not a JSON object`);
  const d = doc as Record<string, unknown>;
  const isList = Array.isArray(d.plugins) || source.endsWith(".conflist");
  const cniVersion = typeof d.cniVersion === "string" && d.cniVersion ? d.cniVersion : "0.1.0";
  const name = d.name;
  if (typeof name !== "string" || !name) throw errInvalidArgument(`cni config ${source}: no network name`);
  if (!NAME.test(name)) throw errInvalidArgument(`cni config ${source}: invalid network name ${JSON.stringify(name)}`);
  if (!(SUPPORTED_CNI_VERSIONS as readonly string[]).includes(cniVersion)) throw errInvalidArgument(`cni config ${source}: unsupported cniVersion ${JSON.stringify(cniVersion)}`);
  let plugins: unknown[];
  if (isList) {
    if (!Array.isArray(d.plugins) || d.plugins.length === 0) throw errInvalidArgument(`cni config ${source}: "plugins" must be a non-empty list`);
    plugins = d.plugins;
  } else {
    const { cniVersion: _v, name: _n, ...plugin } = d;
    plugins = [plugin];
  }
  const out: PluginConf[] = [];
  plugins.forEach((p, i) => {
    if (!p || typeof p !== "object" || Array.isArray(p)) throw errInvalidArgument(`cni config ${source}: plugin ${i} is not an object`);
    const t = (p as Record<string, unknown>).type;
    if (typeof t !== "string" || !t || t.includes("/") || t.startsWith(".")) throw errInvalidArgument(`cni config ${source}: plugin ${i} has no valid "type"`);
    out.push(p as PluginConf);
  });
  return { cniVersion, name, plugins: out, ...(d.disableCheck === true ? { disableCheck: true } : {}), source };
}

/** The network config files of a directory, sorted by name. */
export function confFiles(dir: string): string[] {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw errFailedPrecondition(`cni config dir ${dir}: ${(e as Error).message}`);
  }
  return names.filter((n) => /\.(conf|conflist|json)$/.test(n)).sort().map((n) => path.join(dir, n)).filter((f) => {
    try {
      return fs.statSync(f).isFile();
    } catch {
      return false;
    }
  });
}

/**
 * Load the network to use from `dir`: the one called `name`, else the first file's. A file that does
 * not parse is an error (never skipped), so a broken config is reported rather than silently replaced.
 * FailedPrecondition when the directory holds no network config.
 */
export function loadNetwork(dir: string, name?: string): NetworkConfList {
  const files = confFiles(dir);
  if (files.length === 0) throw errFailedPrecondition(`cni config load failed: no network config found in ${dir}: cni plugin not initialized`);
  for (const f of files) {
    const net = parseNetworkConf(fs.readFileSync(f, "utf8"), f);
    if (!name || net.name === name) return net;
  }
  throw errFailedPrecondition(`cni config load failed: no network named ${JSON.stringify(name)} in ${dir}`);
}

/** The executable for a plugin type, searched in `binDirs`; undefined when absent. */
export function findPlugin(type: string, binDirs: readonly string[]): string | undefined {
  for (const d of binDirs) {
    const p = path.join(d, type);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      if (fs.statSync(p).isFile()) return p;
    } catch {
      /* not here */
    }
  }
  return undefined;
}

/** Check every plugin of `net` exists; FailedPrecondition naming the first missing one. */
export function checkPlugins(net: NetworkConfList, binDirs: readonly string[]): void {
  for (const p of net.plugins) {
    if (!findPlugin(p.type, binDirs)) throw errFailedPrecondition(`cni config ${net.source}: plugin ${JSON.stringify(p.type)} not found in ${binDirs.join(":")}`);
  }
}

/** The loopback network containerd adds to every pod (go-cni's WithLoNetwork). */
export function loopbackNetwork(): NetworkConfList {
  return { cniVersion: "1.0.0", name: "cni-loopback", plugins: [{ type: "loopback" }], source: "builtin loopback" };
}
