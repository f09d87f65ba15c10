/** The snapshots process's components (config schemas and what `ctr plugins ls` shows). */
import { schema } from "#libs/config";
import { component } from "#libs/service/components";
import { GRPC_PLUGIN } from "#libs/service/plugins";

export const SNAPSHOTTER_PLUGIN = "io.containerd.snapshotter.v1";
export const DIFFER_PLUGIN = "io.containerd.differ.v1";
export const SERVICE_PLUGIN = "io.containerd.service.v1";

export const OVERLAYFS = component({
  type: SNAPSHOTTER_PLUGIN,
  id: "overlayfs",
  // containerd's keys; Flotilla reads root_path.
  config: schema.table({ root_path: schema.string(), upperdir_label: schema.bool(), sync_remove: schema.bool(), mount_options: schema.strings() }),
});
export const NATIVE = component({ type: SNAPSHOTTER_PLUGIN, id: "native", config: schema.table({ root_path: schema.string() }) });

/** `[plugins."io.containerd.differ.v1.walking"]` (Flotilla's keys: containerd's walking differ has none). */
export const WALKING_DIFFER = component({
  type: DIFFER_PLUGIN,
  id: "walking",
  requires: ["io.containerd.metadata.v1"],
  config: schema.table({
    max_uncompressed_bytes: schema.int({ min: 0 }),
    allow_devices: schema.bool(),
    workers: schema.int({ min: 1 }),
    local_content_reads: schema.bool(),
    content_root: schema.string(),
    tmp_dir: schema.string(),
  }),
});

export const SNAPSHOTS_COMPONENTS = [
  OVERLAYFS,
  NATIVE,
  WALKING_DIFFER,
  component({ type: SERVICE_PLUGIN, id: "snapshots-service", requires: ["io.containerd.event.v1", "io.containerd.metadata.v1"] }),
  // containerd's `default = ["walking"]`: the differs Diff uses, in order (Flotilla has the one).
  component({ type: SERVICE_PLUGIN, id: "diff-service", requires: [DIFFER_PLUGIN], config: schema.table({ default: schema.strings() }) }),
  component({ type: GRPC_PLUGIN, id: "snapshots", requires: [SERVICE_PLUGIN] }),
  component({ type: GRPC_PLUGIN, id: "diff", requires: [SERVICE_PLUGIN] }),
];
