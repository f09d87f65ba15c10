/** The gateway: the one containerd gRPC API on `[grpc] address`, routing every call to its owner. */
import * as path from "node:path";
import { runService, GRPC_PLUGIN, hostPlatform, type ServiceDefinition } from "../../libs/service";
import { BACKENDS, OWNED_SERVICES, type BackendName } from "../../libs/topology";
import { eventsHandlers } from "./src/events";
import { introspectionHandlers } from "./src/introspection";
import { routeServices } from "./src/router";
import { tuneHttp2Server } from "../../libs/grpc/h2-tuning";

export const VERSION = "v1.6.20+flotilla.0.1.0";
export const REVISION = process.env.FLOTILLA_REVISION ?? "flotilla";

const GATEWAY_GRPC = [
  "containerd.services.version.v1.Version",
  "containerd.services.introspection.v1.Introspection",
  "containerd.services.events.v1.Events",
];

export const gatewayService: ServiceDefinition = {
  name: "gateway",
  async start(sc) {
    // Wide HTTP/2 windows for ctr's uploads, and session rotation before nghttp2's reset limit
    // (ctr cancels a stream per Read window).
    tuneHttp2Server(sc.server.server);
    const addresses = Object.fromEntries(BACKENDS.map((b) => [b, sc.config.flotilla.services[b].address])) as Record<BackendName, string>;
    for (const b of BACKENDS) routeServices(sc.server, OWNED_SERVICES[b], addresses[b]);
    const ownPlugins = [
      { type: "io.containerd.event.v1", id: "exchange", exports: { transport: "nats", subjects: `${sc.config.flotilla.events_subject_prefix}.<namespace>.<topic>` } },
      { type: GRPC_PLUGIN, id: "version" },
      { type: GRPC_PLUGIN, id: "introspection", platforms: [hostPlatform()] },
      { type: GRPC_PLUGIN, id: "events", requires: ["io.containerd.event.v1"] },
      { type: GRPC_PLUGIN, id: "healthcheck" },
    ];
    sc.server.addService("containerd.services.version.v1.Version", { Version: async () => ({ version: VERSION, revision: REVISION }) });
    sc.server.addService("containerd.services.introspection.v1.Introspection", introspectionHandlers({ uuidFile: path.join(sc.root, "uuid"), addresses, ownPlugins }));
    sc.server.addService("containerd.services.events.v1.Events", eventsHandlers(sc.events));
    return { grpcServices: [...GATEWAY_GRPC, ...BACKENDS.flatMap((b) => OWNED_SERVICES[b])], plugins: ownPlugins };
  },
};

if (require.main === module) void runService(gatewayService);
