/** The CRI process's components (config schema and what `ctr plugins ls` shows). */
import { component } from "#libs/service/components";
import { CRI_CONFIG_SCHEMA } from "./src/config";

/** `[plugins."io.containerd.grpc.v1.cri"]`: the Kubernetes CRI (runtime.v1 RuntimeService and ImageService). */
export const CRI_PLUGIN = component({
  type: "io.containerd.grpc.v1",
  id: "cri",
  requires: ["io.containerd.event.v1", "io.containerd.service.v1", "io.containerd.warning.v1"],
  config: CRI_CONFIG_SCHEMA,
});

export const CRI_COMPONENTS = [CRI_PLUGIN];
