/**
 * Running CNI plugins (the CNI spec's executable protocol, as libcni does it): each plugin of a network
 * list is exec'd with `CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME`, `CNI_ARGS` and
 * `CNI_PATH` in its environment and its config (plus `name`, `cniVersion`, `prevResult` and the
 * `runtimeConfig` of the capabilities it declares) on stdin. ADD runs the list in order, each plugin
 * seeing the previous one's result; DEL runs it in reverse with the final ADD result.
 */
import { spawn } from "node:child_process";
import { FlotillaError, ErrorCodes, errFailedPrecondition } from "../errdefs";
import { findPlugin, type NetworkConfList, type PluginConf } from "./config";

export interface Attachment {
  /** CNI_CONTAINERID: `^[A-Za-z0-9][A-Za-z0-9_.-]*$`. */
  containerId: string;
  /** CNI_NETNS: path of the network namespace. */
  netns: string;
  /** CNI_IFNAME, e.g. `eth0`. */
  ifname: string;
  /** Extra `K=V` pairs for CNI_ARGS (IgnoreUnknown=1 is always sent). */
  args?: Record<string, string>;
  /** Values for plugin capabilities (e.g. `portMappings`), sent as `runtimeConfig` to plugins that declare them. */
  capabilityArgs?: Record<string, unknown>;
}

/** A plugin result (CNI spec "Result"), kept as the plugin printed it. */
export type CniResult = Record<string, unknown>;

export interface CniExecOptions {
  binDirs: readonly string[];
  /** Per-plugin time limit (default 60 s). */
  timeoutMs?: number;
}

/** The error of a failed plugin, with the CNI error code when it printed one. */
export class CniPluginError extends FlotillaError {
  constructor(readonly plugin: string, readonly command: string, readonly cniCode: number, msg: string) {
    // CNI codes 1 (incompatible version), 2 (unsupported field), 6 (decoding failure), 7 (invalid network config) are config problems.
    super([1, 2, 6, 7].includes(cniCode) ? ErrorCodes.InvalidArgument : ErrorCodes.Unknown, `cni plugin ${plugin} ${command} failed${cniCode ? ` (code ${cniCode})` : ""}: ${msg}`);
    this.name = "CniPluginError";
  }
}

const versionAtLeast = (v: string, min: string): boolean => {
  const a = v.split(".").map(Number);
  const b = min.split(".").map(Number);
  for (let i = 0; i < 3; i++) if ((a[i] ?? 0) !== (b[i] ?? 0)) return (a[i] ?? 0) > (b[i] ?? 0);
  return true;
};

function pluginConfig(net: NetworkConfList, plugin: PluginConf, att: Attachment, prevResult: CniResult | undefined): Record<string, unknown> {
  const conf: Record<string, unknown> = { ...plugin, name: net.name, cniVersion: net.cniVersion };
  if (prevResult) conf.prevResult = prevResult;
  const caps = plugin.capabilities as Record<string, boolean> | undefined;
  if (caps && att.capabilityArgs) {
    const rc: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(att.capabilityArgs)) if (caps[k]) rc[k] = v;
    if (Object.keys(rc).length) conf.runtimeConfig = rc;
  }
  return conf;
}

function execPlugin(bin: string, type: string, command: string, conf: Record<string, unknown>, att: Attachment, opts: CniExecOptions): Promise<CniResult | undefined> {
  const args = ["IgnoreUnknown=1", ...Object.entries(att.args ?? {}).map(([k, v]) => `${k}=${v}`)].join(";");
  const env = {
    PATH: process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin",
    CNI_COMMAND: command,
    CNI_CONTAINERID: att.containerId,
    CNI_NETNS: att.netns,
    CNI_IFNAME: att.ifname,
    CNI_ARGS: args,
    CNI_PATH: opts.binDirs.join(":"),
  };
  return new Promise((resolve, reject) => {
    const child = spawn(bin, [], { env, stdio: ["pipe", "pipe", "pipe"] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on("data", (b: Buffer) => out.push(b));
    child.stderr.on("data", (b: Buffer) => err.push(b));
    const timer = setTimeout(() => child.kill("SIGKILL"), opts.timeoutMs ?? 60000);
    child.on("error", (e) => {
      clearTimeout(timer);
      reject(new CniPluginError(type, command, 0, e.message));
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      const stdout = Buffer.concat(out).toString().trim();
      if (code === 0) {
        if (!stdout) return resolve(undefined);
        try {
          return resolve(JSON.parse(stdout) as CniResult);
        } catch (e) {
          return reject(new CniPluginError(type, command, 0, `undecodable result: ${(e as Error).message}`));
        }
      }
      let cniCode = 0;
      let msg = signal ? `killed by ${signal}` : `exit status ${code}`;
      try {
        const e = JSON.parse(stdout) as { code?: number; msg?: string; details?: string };
        cniCode = Number(e.code ?? 0);
        msg = [e.msg, e.details].filter(Boolean).join("; ") || msg;
      } catch {
        const stderr = Buffer.concat(err).toString().trim();
        if (stdout || stderr) msg = `${msg}: ${(stdout || stderr).slice(0, 500)}`;
      }
      reject(new CniPluginError(type, command, cniCode, msg));
    });
    child.stdin.on("error", () => undefined);
    child.stdin.end(JSON.stringify(conf));
  });
}

function binaryOf(p: PluginConf, binDirs: readonly string[]): string {
  const bin = findPlugin(p.type, binDirs);
  if (!bin) throw errFailedPrecondition(`cni plugin ${JSON.stringify(p.type)} not found in ${binDirs.join(":")}`);
  return bin;
}

/**
 * CNI ADD of the whole list. Resolves with the final result. On failure nothing is undone here (the
 * caller runs `delNetwork`, which every plugin must tolerate for a partial setup, as the spec requires).
 */
export async function addNetwork(net: NetworkConfList, att: Attachment, opts: CniExecOptions): Promise<CniResult> {
  let prev: CniResult | undefined;
  for (const p of net.plugins) {
    const res = await execPlugin(binaryOf(p, opts.binDirs), p.type, "ADD", pluginConfig(net, p, att, prev), att, opts);
    if (res) prev = res;
  }
  return prev ?? { cniVersion: net.cniVersion };
}

/**
 * CNI DEL of the whole list, in reverse, each plugin seeing `result` (the ADD result) when the version
 * allows it. Every plugin runs even if an earlier one failed; the first error is thrown at the end.
 */
export async function delNetwork(net: NetworkConfList, att: Attachment, result: CniResult | undefined, opts: CniExecOptions): Promise<void> {
  const prev = result && versionAtLeast(net.cniVersion, "0.4.0") ? result : undefined;
  let first: unknown;
  for (const p of [...net.plugins].reverse()) {
    try {
      await execPlugin(binaryOf(p, opts.binDirs), p.type, "DEL", pluginConfig(net, p, att, prev), att, opts);
    } catch (e) {
      first ??= e;
    }
  }
  if (first) throw first;
}

/** The addresses a result assigns inside the sandbox (`10.0.0.2/24` form), in order. */
export function resultAddresses(result: CniResult | undefined): string[] {
  if (!result) return [];
  const out: string[] = [];
  const ips = result.ips as { address?: string; interface?: number }[] | undefined;
  const ifs = result.interfaces as { sandbox?: string }[] | undefined;
  if (Array.isArray(ips)) {
    for (const ip of ips) {
      if (!ip.address) continue;
      if (ifs && typeof ip.interface === "number" && ifs[ip.interface] && !ifs[ip.interface]!.sandbox) continue;
      out.push(ip.address);
    }
  }
  for (const k of ["ip4", "ip6"]) {
    const v = result[k] as { ip?: string } | undefined;
    if (v?.ip) out.push(v.ip);
  }
  return out;
}
