/** The transfer process's components (config schemas and what `ctr plugins ls` shows). */
import { schema } from "#libs/config";
import { component } from "#libs/service/components";
import { GRPC_PLUGIN } from "#libs/service/plugins";

export const TRANSFER_PLUGIN = "io.containerd.transfer.v1";

/** `[plugins."io.containerd.transfer.v1.local"]`: containerd v2's keys; Flotilla reads the two limits. */
export const TRANSFER_LOCAL = component({
  type: TRANSFER_PLUGIN,
  id: "local",
  requires: ["io.containerd.lease.v1", "io.containerd.metadata.v1", "io.containerd.diff.v1"],
  config: schema.table({
    max_concurrent_downloads: schema.int(),
    max_concurrent_uploaded_layers: schema.int(),
    // containerd's, accepted and not used:
    check_platform_supported: schema.bool(),
    config_path: schema.string(),
    unpack_config: schema.list(schema.table({ platform: schema.string(), snapshotter: schema.string(), differ: schema.string() })),
  }),
});

export const TRANSFER_COMPONENTS = [
  component({ type: "io.containerd.streaming.v1", id: "manager", requires: ["io.containerd.metadata.v1"] }),
  TRANSFER_LOCAL,
  component({ type: GRPC_PLUGIN, id: "transfer", requires: [TRANSFER_PLUGIN, "io.containerd.streaming.v1"] }),
  component({ type: GRPC_PLUGIN, id: "streaming", requires: ["io.containerd.streaming.v1"] }),
];
