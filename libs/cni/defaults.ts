/**
 * Flotilla's own CNI networks. A fresh machine has no CNI config, so (as nerdctl and Podman do) the
 * first sandbox that needs a network gets a default one: a Linux bridge `flotilla0` with host-local
 * IPAM on 10.88.0.0/16 (the subnet of containerd's sample config) and portmap for published ports,
 * written to Flotilla's own conf dir `<root>/cni/net.d`. A conf dir named in the config that holds
 * networks is used as it is. `flotilla network ls|create|rm|inspect` work on the same directory.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { errAlreadyExists, errFailedPrecondition, errInvalidArgument, errNotFound } from "../errdefs";
import { confFiles, parseNetworkConf, type NetworkConfList } from "./config";

/** Where containerd (and so the sandbox process, unless configured) looks for networks. */
export const SYSTEM_CNI_CONF_DIR = "/etc/cni/net.d";
/** Plugin directories: the upstream layout, then Debian's containernetworking-plugins. */
export const DEFAULT_CNI_BIN_DIRS = ["/opt/cni/bin", "/usr/lib/cni"];

export interface BridgeNetworkSpec {
  name: string;
  /** Linux bridge name (at most 15 characters). */
  bridge: string;
  /** IPv4 CIDR, e.g. 10.88.0.0/16. */
  subnet: string;
}

export const DEFAULT_NETWORK: BridgeNetworkSpec = { name: "flotilla", bridge: "flotilla0", subnet: "10.88.0.0/16" };
const DEFAULT_FILE = `10-${DEFAULT_NETWORK.name}.conflist`;
const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;
const BRIDGE = /^[A-Za-z0-9_.-]{1,15}$/;

/** Flotilla's own conf dir under the stack's persistent root. */
export function ownConfDir(root: string): string {
  return path.join(root, "cni", "net.d");
}

/** A parsed IPv4 CIDR: first address and prefix length. */
function parseCidr(cidr: string): { base: number; bits: number } {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/.exec(cidr);
  const octets = m ? m.slice(1, 5).map(Number) : [];
  const bits = m ? Number(m[5]) : -1;
  if (!m || octets.some((o) => o > 255) || bits < 8 || bits > 30) throw errInvalidArgument(`subnet ${JSON.stringify(cidr)}: want an IPv4 CIDR from /8 to /30`);
  const addr = octets.reduce((a, o) => a * 256 + o, 0);
  const size = 2 ** (32 - bits);
  return { base: addr - (addr % size), bits };
}

function overlaps(a: string, b: string): boolean {
  const x = parseCidr(a);
  const y = parseCidr(b);
  const bits = Math.min(x.bits, y.bits);
  const size = 2 ** (32 - bits);
  return Math.floor(x.base / size) === Math.floor(y.base / size);
}

/** The conflist of a bridge network: bridge (gateway, masquerade, hairpin) with host-local IPAM, then portmap. */
export function bridgeConfList(spec: BridgeNetworkSpec): Record<string, unknown> {
  return {
    cniVersion: "1.0.0",
    name: spec.name,
    plugins: [
      { type: "bridge", bridge: spec.bridge, isGateway: true, ipMasq: true, hairpinMode: true, ipam: { type: "host-local", ranges: [[{ subnet: spec.subnet }]], routes: [{ dst: "0.0.0.0/0" }] } },
      { type: "portmap", capabilities: { portMappings: true } },
    ],
  };
}

/** Every network in `dir`, sorted by file name (the first is the one sandboxes get). Unparsable files throw. */
export function listNetworks(dir: string): NetworkConfList[] {
  return confFiles(dir).map((f) => parseNetworkConf(fs.readFileSync(f, "utf8"), f));
}

export function inspectNetwork(dir: string, name: string): NetworkConfList {
  const net = listNetworks(dir).find((n) => n.name === name);
  if (!net) throw errNotFound(`network ${JSON.stringify(name)}: not found`);
  return net;
}

/** Write `text` as `file` only if no such file exists (a temp file linked into place). False when one does. */
function writeOnce(file: string, text: string): boolean {
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o755 });
  const tmp = `${file}.tmp-${process.pid}-${Date.now()}`;
  fs.writeFileSync(tmp, text, { mode: 0o644 });
  try {
    fs.linkSync(tmp, file);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "EEXIST") return false;
    throw e;
  } finally {
    fs.rmSync(tmp, { force: true });
  }
}

/** A free /24 in 10.89.0.0/16 for a new network (the default network has 10.88.0.0/16). */
function freeSubnet(existing: string[]): string {
  for (let i = 0; i < 256; i++) {
    const s = `10.89.${i}.0/24`;
    if (!existing.some((e) => overlaps(e, s))) return s;
  }
  throw errFailedPrecondition("no free subnet left in 10.89.0.0/16: give one with --subnet");
}

function subnetsOf(net: NetworkConfList): string[] {
  const out: string[] = [];
  for (const p of net.plugins) {
    const ipam = p.ipam as { subnet?: string; ranges?: { subnet?: string }[][] } | undefined;
    if (ipam?.subnet) out.push(ipam.subnet);
    for (const set of ipam?.ranges ?? []) for (const r of set) if (r.subnet) out.push(r.subnet);
  }
  return out.filter((s) => /^\d+\.\d+\.\d+\.\d+\/\d+$/.test(s));
}

/** Create a bridge network in `dir`. AlreadyExists for a name taken; InvalidArgument for a subnet or bridge in use. */
export function createNetwork(dir: string, spec: Partial<BridgeNetworkSpec> & { name: string }): NetworkConfList {
  if (!NAME.test(spec.name)) throw errInvalidArgument(`network name ${JSON.stringify(spec.name)}: want letters, digits, '_', '.', '-'`);
  const existing = listNetworks(dir);
  if (existing.some((n) => n.name === spec.name)) throw errAlreadyExists(`network ${JSON.stringify(spec.name)}: already exists`);
  const subnets = existing.flatMap(subnetsOf);
  const subnet = spec.subnet ?? freeSubnet(subnets);
  parseCidr(subnet);
  const clash = existing.find((n) => subnetsOf(n).some((s) => overlaps(s, subnet)));
  if (clash) throw errInvalidArgument(`subnet ${subnet} overlaps network ${JSON.stringify(clash.name)}`);
  const bridge = spec.bridge ?? `flt-${spec.name}`.slice(0, 15);
  if (!BRIDGE.test(bridge)) throw errInvalidArgument(`bridge name ${JSON.stringify(bridge)}: at most 15 letters, digits, '_', '.', '-'`);
  const used = existing.find((n) => n.plugins.some((p) => p.bridge === bridge));
  if (used) throw errInvalidArgument(`bridge ${bridge} is used by network ${JSON.stringify(used.name)}`);
  const file = path.join(dir, spec.name === DEFAULT_NETWORK.name ? DEFAULT_FILE : `50-${spec.name}.conflist`);
  const text = JSON.stringify(bridgeConfList({ name: spec.name, bridge, subnet }), null, 2) + "\n";
  if (!writeOnce(file, text)) throw errAlreadyExists(`network file ${file}: already exists`);
  return parseNetworkConf(text, file);
}

/** Remove a network's file from `dir` (NotFound when absent). The default network stays. */
export function removeNetwork(dir: string, name: string): string {
  if (name === DEFAULT_NETWORK.name) throw errFailedPrecondition(`network ${JSON.stringify(name)} is the default network: it cannot be removed`);
  const net = inspectNetwork(dir, name);
  fs.rmSync(net.source);
  return net.source;
}

/**
 * The conf dir sandboxes use: `configured` when it holds network configs, else Flotilla's own, where
 * the default network is written first if it has none (safe when several processes race).
 */
export function networkConfDir(configured: string, root: string): string {
  if (confFiles(configured).length > 0) return configured;
  const own = ownConfDir(root);
  if (confFiles(own).length === 0) writeOnce(path.join(own, DEFAULT_FILE), JSON.stringify(bridgeConfList(DEFAULT_NETWORK), null, 2) + "\n");
  return own;
}
