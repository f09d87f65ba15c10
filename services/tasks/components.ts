/** The tasks process's components (config schemas and what `ctr plugins ls` shows). */
import { schema } from "#libs/config";
import { component } from "#libs/service/components";
import { GRPC_PLUGIN, hostPlatform } from "#libs/service/plugins";

export const RUNTIME_PLUGIN = "io.containerd.runtime.v2";
export const SERVICE_PLUGIN = "io.containerd.service.v1";
export const TTRPC_PLUGIN = "io.containerd.ttrpc.v1";

/** `[plugins."io.containerd.runtime.v2.task"]` (README "Task runtimes"); platforms and sched_core are containerd's, not used. */
export const RUNTIME_TASK = component({
  type: RUNTIME_PLUGIN,
  id: "task",
  requires: [RUNTIME_PLUGIN],
  platforms: [hostPlatform()],
  config: schema.table({
    socket_dir: schema.string(),
    runc_root: schema.string(),
    ttrpc_address: schema.string(),
    warm_shims: schema.int({ min: 0, max: 16 }),
    shim_group_size: schema.int({ min: 1, max: 1024 }),
    shim_node_options: schema.strings(),
    runtimes: schema.map(schema.table({ shim: schema.string(), runtime_binary: schema.string(), runtime_args: schema.strings() })),
    platforms: schema.strings(),
    sched_core: schema.bool(),
  }),
});
export const RUNTIME_SHIM = component({ type: RUNTIME_PLUGIN, id: "shim", requires: ["io.containerd.metadata.v1", "io.containerd.event.v1"], platforms: [hostPlatform()] });
export const CONTAINERS_METADATA = component({ type: "io.containerd.metadata.v1", id: "lmdb-containers" });
export const TTRPC_EVENTS = component({ type: TTRPC_PLUGIN, id: "events", requires: ["io.containerd.event.v1"] });

export const TASKS_COMPONENTS = [
  CONTAINERS_METADATA,
  RUNTIME_SHIM,
  RUNTIME_TASK,
  component({ type: SERVICE_PLUGIN, id: "containers-service", requires: ["io.containerd.metadata.v1"] }),
  // containerd's rdt_config_file (Intel RDT), accepted and not used.
  component({ type: SERVICE_PLUGIN, id: "tasks-service", requires: [RUNTIME_PLUGIN, "io.containerd.metadata.v1"], config: schema.table({ rdt_config_file: schema.string() }) }),
  component({ type: GRPC_PLUGIN, id: "containers", requires: [SERVICE_PLUGIN] }),
  component({ type: GRPC_PLUGIN, id: "tasks", requires: [SERVICE_PLUGIN] }),
  TTRPC_EVENTS,
];
