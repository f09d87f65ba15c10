/** Which Flotilla process owns which containerd gRPC service. The gateway routes by this table. */
import { dialAddress, type Config, type ServiceName } from "../config";

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
