/** Which Flotilla process owns which containerd gRPC service. The gateway routes by this table. */
import { dialAddress, grpcTarget, onThisHost, unixPath, type Config, type ServiceName } from "../config";

export const OWNED_SERVICES: Record<Exclude<ServiceName, "gateway">, readonly string[]> = {
  content: ["containerd.services.content.v1.Content"],
  snapshots: ["containerd.services.snapshots.v1.Snapshots", "containerd.services.diff.v1.Diff"],
  images: ["containerd.services.images.v1.Images", "containerd.services.namespaces.v1.Namespaces", "containerd.services.leases.v1.Leases"],
  tasks: ["containerd.services.containers.v1.Containers", "containerd.services.tasks.v1.Tasks"],
  transfer: ["containerd.services.transfer.v1.Transfer", "containerd.services.streaming.v1.Streaming"],
  sandbox: ["containerd.services.sandbox.v1.Store", "containerd.services.sandbox.v1.Controller"],
  cri: ["runtime.v1.RuntimeService", "runtime.v1.ImageService"],
};

/** Served by the gateway itself. */
export const GATEWAY_SERVICES = [
  "containerd.services.version.v1.Version",
  "containerd.services.introspection.v1.Introspection",
  "containerd.services.events.v1.Events",
  "grpc.health.v1.Health",
] as const;

export type BackendName = keyof typeof OWNED_SERVICES;
export const BACKENDS = Object.keys(OWNED_SERVICES) as BackendName[];

export function ownerOf(grpcService: string): BackendName | undefined {
  for (const b of BACKENDS) if (OWNED_SERVICES[b].includes(grpcService)) return b;
  return undefined;
}

/** Where `svc` is dialled (its advertised address; see dialAddress in libs/config). */
export function addressOf(cfg: Config, svc: ServiceName): string {
  return dialAddress(cfg, svc);
}

/**
 * The node group: the processes that manage kernel objects (mounts, processes, namespaces) of the
 * host whose containers they run, and call each other with paths on it. They run on one host;
 * content, images, transfer and the gateway can run anywhere.
 */
export const NODE_GROUP: readonly ServiceName[] = ["snapshots", "tasks", "sandbox", "cri"];

/** The host part of a dial address; undefined for a unix socket. */
export function dialHost(address: string): string | undefined {
  if (unixPath(address) !== undefined) return undefined;
  return grpcTarget(address).replace(/:\d+$/, "").replace(/^\[(.*)\]$/, "$1");
}

/**
 * What the config alone says is wrong with where processes run (the text of the error), or undefined:
 * node-group members dialled at two different hosts (neither a unix socket nor loopback).
 */
export function placementError(cfg: Config): string | undefined {
  const remote = NODE_GROUP.filter((s) => !onThisHost(dialAddress(cfg, s))).map((s) => ({ s, host: dialHost(dialAddress(cfg, s))! }));
  const first = remote[0];
  const other = remote.find((r) => r.host !== first?.host);
  if (!first || !other) return undefined;
  return `placement: ${NODE_GROUP.join(", ")} form the node group and run on one host, but ${first.s} is dialled at ${first.host} and ${other.s} at ${other.host}`;
}

/**
 * For an `up` on this host running `here` (`localHosts`: this host's addresses and names): the error
 * when a node-group member runs here while another is dialled at an address that is not this host's.
 */
export function splitGroupError(cfg: Config, here: readonly ServiceName[], localHosts: ReadonlySet<string>): string | undefined {
  const mine = NODE_GROUP.filter((s) => here.includes(s));
  if (!mine.length) return undefined;
  for (const s of NODE_GROUP) {
    const addr = dialAddress(cfg, s);
    const host = dialHost(addr);
    if (host === undefined || onThisHost(addr) || localHosts.has(host)) continue;
    return `placement: ${mine.join(", ")} run${mine.length === 1 ? "s" : ""} here but ${s}, of the same node group (${NODE_GROUP.join(", ")}), is dialled at ${host}, which is not this host: run the node group on one host`;
  }
  return undefined;
}
