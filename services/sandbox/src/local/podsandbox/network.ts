/**
 * A pod's network: its own network namespace (pinned under the sandbox process's state directory) with
 * loopback up and, in `cni` mode, the configured CNI network attached as `eth0`. Everything needed to
 * undo it (namespace path, the exact network config, the ADD result) is kept in the pod's record, so
 * teardown works after a crash and after the config directory changed.
 */
import * as crypto from "node:crypto";
import * as path from "node:path";
import type { Logger } from "pino";
import { errInvalidArgument } from "#libs/errdefs";
import {
  addNetwork,
  checkPlugins,
  createNetns,
  delNetwork,
  loadNetwork,
  networkConfDir,
  loopbackNetwork,
  removeNetns,
  resultAddresses,
  type Attachment,
  type CniResult,
  type NetworkConfList,
} from "#libs/cni";
import { SANDBOX_LABELS } from "#libs/core/sandbox";

export type NetworkMode = "cni" | "none" | "host";

export interface PortMapping {
  hostPort: number;
  containerPort: number;
  protocol: string;
  hostIP?: string;
}

export interface PodNetworkState {
  mode: NetworkMode;
  /** The namespace path ("" in host mode). */
  netns: string;
  /** True when this controller created the namespace (and so removes it). */
  owned: boolean;
  /** CNI_CONTAINERID. */
  cniId: string;
  ifname: string;
  /** The network attached (cni mode). */
  net?: NetworkConfList;
  capabilityArgs?: Record<string, unknown>;
  /** The plugin dirs this sandbox's network was planned with, when not the controller's (Controller.Create annotation). */
  binDirs?: string[];
  /** The ADD result, once attached. */
  result?: CniResult;
  addresses: string[];
}

export interface NetworkOptions {
  confDir: string;
  binDirs: string[];
  /** Where namespaces are pinned. */
  netnsDir: string;
  /**
   * The stack's root: when set and confDir holds no network, Flotilla's own conf dir under it is used
   * (its default network written on first use).
   */
  defaultRoot?: string;
  /** Network name to use from confDir (default: the first file's). */
  networkName?: string;
  log?: Logger;
}

/** CNI container id for a sandbox: unique across namespaces, valid for CNI and IPAM file names. */
export function cniIdFor(ns: string, id: string): string {
  return crypto.createHash("sha256").update(`${ns}/${id}`).digest("hex").slice(0, 32);
}

export function parsePortMappings(v: string | undefined): PortMapping[] {
  if (!v) return [];
  let list: unknown;
  try {
    list = JSON.parse(v);
  } catch (e) {
    throw errInvalidArgument(`annotation ${SANDBOX_LABELS.portMappings}: ${(e as Error).message}`);
  }
  if (!Array.isArray(list)) throw errInvalidArgument(`annotation ${SANDBOX_LABELS.portMappings}: must be a JSON list`);
  return list.map((m: Record<string, unknown>) => {
    const hostPort = Number(m.hostPort);
    const containerPort = Number(m.containerPort);
    const protocol = String(m.protocol ?? "tcp").toLowerCase();
    const ok = (n: number): boolean => Number.isInteger(n) && n > 0 && n < 65536;
    if (!ok(hostPort) || !ok(containerPort) || !["tcp", "udp", "sctp"].includes(protocol)) throw errInvalidArgument(`annotation ${SANDBOX_LABELS.portMappings}: bad mapping ${JSON.stringify(m)}`);
    return { hostPort, containerPort, protocol, ...(m.hostIP ? { hostIP: String(m.hostIP) } : {}) };
  });
}

export class PodNetworks {
  constructor(private readonly opts: NetworkOptions) {}

  /**
   * Decide the network of a new sandbox without touching the system: the mode from the annotation,
   * the config loaded and validated (InvalidArgument / FailedPrecondition on a broken or missing one).
   */
  plan(ns: string, id: string, annotations: Record<string, string>, netnsPath: string): PodNetworkState {
    const cniId = cniIdFor(ns, id);
    const base = { cniId, ifname: "eth0", addresses: [] as string[] };
    if (netnsPath) return { ...base, mode: "none", netns: netnsPath, owned: false };
    const mode = (annotations[SANDBOX_LABELS.network] || "cni") as NetworkMode;
    if (!["cni", "none", "host"].includes(mode)) throw errInvalidArgument(`annotation ${SANDBOX_LABELS.network}: unknown network mode ${JSON.stringify(mode)}`);
    if (mode === "host") return { ...base, mode, netns: "", owned: false };
    const netns = path.join(this.opts.netnsDir, `cni-${cniId}`);
    if (mode === "none") return { ...base, mode, netns, owned: true };
    const ownConf = annotations[SANDBOX_LABELS.cniConfDir];
    const confDir = ownConf || (this.opts.defaultRoot ? networkConfDir(this.opts.confDir, this.opts.defaultRoot) : this.opts.confDir);
    const binDirs = annotations[SANDBOX_LABELS.cniBinDirs]?.split(":").filter(Boolean) ?? [];
    const net = loadNetwork(confDir, ownConf ? undefined : this.opts.networkName);
    checkPlugins(net, this.binDirs(binDirs));
    checkPlugins(loopbackNetwork(), this.binDirs(binDirs));
    const ports = parsePortMappings(annotations[SANDBOX_LABELS.portMappings]);
    return { ...base, mode, netns, owned: true, net, ...(binDirs.length ? { binDirs } : {}), ...(ports.length ? { capabilityArgs: { portMappings: ports } } : {}) };
  }

  private binDirs(own: string[] | undefined): string[] {
    return own?.length ? own : this.opts.binDirs;
  }

  private attachment(st: PodNetworkState, sandboxId: string): Attachment {
    return { containerId: st.cniId, netns: st.netns, ifname: st.ifname, args: { K8S_POD_INFRA_CONTAINER_ID: sandboxId }, ...(st.capabilityArgs ? { capabilityArgs: st.capabilityArgs } : {}) };
  }

  /** Make the namespace and attach the network. On failure everything done so far is undone before the error is thrown. */
  async setup(st: PodNetworkState, sandboxId: string): Promise<PodNetworkState> {
    if (!st.owned) return st;
    const exec = { binDirs: this.binDirs(st.binDirs) };
    await createNetns(st.netns);
    try {
      await addNetwork(loopbackNetwork(), { containerId: st.cniId, netns: st.netns, ifname: "lo" }, exec);
      if (st.mode !== "cni" || !st.net) return st;
      const result = await addNetwork(st.net, this.attachment(st, sandboxId), exec);
      return { ...st, result, addresses: resultAddresses(result) };
    } catch (e) {
      await this.teardown(st, sandboxId).catch((err: unknown) => this.opts.log?.warn({ err, sandbox: sandboxId }, "cleaning up a failed network setup"));
      throw e;
    }
  }

  /** Detach the network (CNI DEL, releasing the address) and remove the namespace; repeatable. */
  async teardown(st: PodNetworkState, sandboxId: string): Promise<void> {
    if (!st.owned) return;
    let first: unknown;
    if (st.mode === "cni" && st.net) {
      try {
        await delNetwork(st.net, this.attachment(st, sandboxId), st.result, { binDirs: this.binDirs(st.binDirs) });
      } catch (e) {
        first = e;
      }
    }
    await removeNetns(st.netns);
    if (first) throw first;
  }
}
