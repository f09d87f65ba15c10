/** The sandbox process's components (config schemas and what `ctr plugins ls` shows). */
import { schema } from "#libs/config";
import { component } from "#libs/service/components";
import { GRPC_PLUGIN } from "#libs/service/plugins";

/** `[plugins."io.containerd.podsandbox.controller.v1.podsandbox"]`: the CNI networks of pod sandboxes. */
export const PODSANDBOX = component({
  type: "io.containerd.podsandbox.controller.v1",
  id: "podsandbox",
  requires: ["io.containerd.event.v1"],
  config: schema.table({ cni_conf_dir: schema.string(), cni_bin_dir: schema.stringOrList(), cni_network: schema.string() }),
});
/** `[plugins."io.containerd.sandbox.controller.v1.shim"]`: where sandbox shims come from and report to. */
export const SHIM_CONTROLLER = component({
  type: "io.containerd.sandbox.controller.v1",
  id: "shim",
  requires: ["io.containerd.event.v1"],
  config: schema.table({ shim_dirs: schema.stringOrList(), ttrpc_address: schema.string() }),
});
export const SANDBOX_STORE = component({ type: "io.containerd.sandbox.store.v1", id: "local", requires: ["io.containerd.metadata.v1"] });

export const SANDBOX_COMPONENTS = [
  SANDBOX_STORE,
  PODSANDBOX,
  SHIM_CONTROLLER,
  component({ type: GRPC_PLUGIN, id: "sandboxes", requires: ["io.containerd.sandbox.store.v1"] }),
  component({ type: GRPC_PLUGIN, id: "sandbox-controllers", requires: ["io.containerd.podsandbox.controller.v1", "io.containerd.sandbox.controller.v1"] }),
];
