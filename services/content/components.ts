/** The content process's components (config schemas and what `ctr plugins ls` shows). */
import { component } from "#libs/service/components";
import { GRPC_PLUGIN } from "#libs/service/plugins";

export const CONTENT_STORE = component({ type: "io.containerd.content.v1", id: "content" });

export const CONTENT_COMPONENTS = [
  CONTENT_STORE,
  component({ type: "io.containerd.service.v1", id: "content-service", requires: ["io.containerd.content.v1"] }),
  component({ type: GRPC_PLUGIN, id: "content", requires: ["io.containerd.service.v1"] }),
];
