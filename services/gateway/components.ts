/** The gateway's own components (config schemas and what `ctr plugins ls` shows). */
import { component } from "#libs/service/components";
import { GRPC_PLUGIN, hostPlatform } from "#libs/service/plugins";

export const EVENT_EXCHANGE = component({ type: "io.containerd.event.v1", id: "exchange" });

export const GATEWAY_COMPONENTS = [
  EVENT_EXCHANGE,
  component({ type: GRPC_PLUGIN, id: "version" }),
  component({ type: GRPC_PLUGIN, id: "introspection", platforms: [hostPlatform()] }),
  component({ type: GRPC_PLUGIN, id: "events", requires: ["io.containerd.event.v1"] }),
  component({ type: GRPC_PLUGIN, id: "healthcheck" }),
];
