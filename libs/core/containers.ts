/**
 * Containers: containerd's container metadata records, as a contract.
 *
 * `ContainerStore` keeps the records of containerd.services.containers.v1.Containers. The local store
 * lives in the tasks process (services/tasks/src/local/containers.ts, on LMDB); `ContainerStoreProxy`
 * (libs/clients/containers.ts) implements it over gRPC. Both pass test/tasks/containers-suite.ts.
 *
 * The spec, runtime options and extensions are opaque typed values, stored and returned byte for byte.
 * Every method takes the call context first and requires a namespace (FailedPrecondition without one).
 * No runtime dependencies: types, constants and pure helpers only.
 */
import type { MetadataStore, TypedValue } from "./sandbox";

export type { TypedValue };

export interface ContainerRuntime {
  /** e.g. `io.containerd.runc.v2`. */
  name: string;
  options?: TypedValue;
}

export interface Container {
  id: string;
  labels: Record<string, string>;
  image: string;
  runtime: ContainerRuntime;
  /** The OCI runtime spec (`types.containerd.io/opencontainers/runtime-spec/1/Spec`, JSON). */
  spec?: TypedValue;
  snapshotter: string;
  snapshotKey: string;
  createdAt: Date;
  updatedAt: Date;
  extensions: Record<string, TypedValue>;
  sandbox: string;
}

/** What a caller gives to create or update a container (the store stamps the times). */
export type ContainerInput = Omit<Container, "createdAt" | "updatedAt" | "labels" | "extensions" | "image" | "snapshotter" | "snapshotKey" | "sandbox"> & {
  labels?: Record<string, string>;
  extensions?: Record<string, TypedValue>;
  image?: string;
  snapshotter?: string;
  snapshotKey?: string;
  sandbox?: string;
};

/** The paths Update accepts (plus `labels.<k>` and `extensions.<k>`); none means all five. */
export const CONTAINER_UPDATE_FIELDS = ["labels", "spec", "extensions", "image", "snapshotkey"] as const;

export const CONTAINER_EVENTS = {
  create: { topic: "/containers/create", type: "containerd.events.ContainerCreate" },
  update: { topic: "/containers/update", type: "containerd.events.ContainerUpdate" },
  delete: { topic: "/containers/delete", type: "containerd.events.ContainerDelete" },
} as const;

export const OCI_SPEC_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
export const OCI_PROCESS_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/Process";

/**
 * Container records. `create`: InvalidArgument for a bad id, oversized labels, an empty runtime name,
 * a missing spec, a snapshot key without a snapshotter, or an empty extension key. `update` fields:
 * `labels`, `labels.<k>`, `spec`, `extensions`, `extensions.<k>`, `image`, `snapshotkey`; none means
 * all five, and then the runtime name and snapshotter must not change (InvalidArgument); an unknown
 * field is InvalidArgument. `list` filters: `id`, `image`, `runtime.name`, `snapshotter`, `labels.<k>`, ...
 */
export type ContainerStore = MetadataStore<Container, ContainerInput>;
