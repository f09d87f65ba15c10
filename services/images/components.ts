/** The images process's components (config schemas and what `ctr plugins ls` shows). */
import { component } from "#libs/service/components";
import { GRPC_PLUGIN } from "#libs/service/plugins";
import { SCHEDULER_CONFIG_SCHEMA } from "./src/local/gc/scheduler";

export const GC_PLUGIN = "io.containerd.gc.v1";
export const METADATA = component({ type: "io.containerd.metadata.v1", id: "lmdb", capabilities: [] });
export const GC_SCHEDULER = component({ type: GC_PLUGIN, id: "scheduler", requires: ["io.containerd.metadata.v1"], config: SCHEDULER_CONFIG_SCHEMA });

export const IMAGES_COMPONENTS = [
  METADATA,
  GC_SCHEDULER,
  component({ type: "io.containerd.lease.v1", id: "manager", requires: ["io.containerd.metadata.v1"] }),
  component({ type: "io.containerd.service.v1", id: "images-service", requires: ["io.containerd.metadata.v1", GC_PLUGIN] }),
  component({ type: "io.containerd.service.v1", id: "leases-service", requires: ["io.containerd.lease.v1", GC_PLUGIN] }),
  component({ type: "io.containerd.service.v1", id: "namespaces-service", requires: ["io.containerd.metadata.v1"] }),
  component({ type: GRPC_PLUGIN, id: "images", requires: ["io.containerd.service.v1"] }),
  component({ type: GRPC_PLUGIN, id: "leases", requires: ["io.containerd.service.v1"] }),
  component({ type: GRPC_PLUGIN, id: "namespaces", requires: ["io.containerd.service.v1"] }),
];
