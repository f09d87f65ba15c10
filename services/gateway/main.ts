/** The gateway: the one containerd gRPC API on `[grpc] address`, routing every call to its owner. */
import * as path from "node:path";
import { dialAddress, onThisHost, serviceRoot } from "#libs/config";
import { DirectContentReads } from "./src/content-reads";
import { loadTls } from "#libs/grpc/tls";
import { runService, internalAddress, componentPlugins, uriOf, HEALTH_SERVICE, type ServiceDefinition } from "#libs/service";
import { EVENT_EXCHANGE, GATEWAY_COMPONENTS } from "./components";
import { BACKENDS, GATEWAY_SERVICES, OWNED_SERVICES, type BackendName } from "#libs/topology";
import { eventsHandlers } from "./src/events";
import { introspectionHandlers } from "./src/introspection";
import { GatewayFront } from "./src/front";
import { OwnerHealth } from "./src/health";
import { blobHolds, contentView, ReadViews } from "./src/views";

export const VERSION = "v1.6.20+flotilla.0.1.0";
export const REVISION = process.env.FLOTILLA_REVISION ?? "flotilla";

const GATEWAY_GRPC = [
  "containerd.services.version.v1.Version",
  "containerd.services.introspection.v1.Introspection",
  "containerd.services.events.v1.Events",
];

export const gatewayService: ServiceDefinition = {
  name: "gateway",
  components: GATEWAY_COMPONENTS,
  async start(sc) {
    const addresses = Object.fromEntries(BACKENDS.map((b) => [b, dialAddress(sc.config, b)])) as Record<BackendName, string>;
    // Every call of an owned service is proxied as raw HTTP/2 to its owner; the rest reach this
    // process's own gRPC server on its internal socket.
    // Blobs are read straight from the content process's files when it runs on this host (it still
    // decides who may read what; see src/content-reads.ts).
    // Only for owners on this host: files under a root here are not those of a process elsewhere.
    const local = (b: BackendName): string | undefined => (onThisHost(addresses[b]) ? serviceRoot(sc.config, b) : undefined);
    const contentRoot = local("content");
    const content = contentRoot !== undefined ? contentView(contentRoot) : undefined;
    const contentReads = sc.config.flotilla.gateway_content_reads && contentRoot !== undefined && content ? new DirectContentReads(contentRoot, blobHolds(content)) : undefined;
    // Lookups (Content.Info, Images.Get, ...) are answered from read-only views of the owners' databases
    // when they find the record (see src/views.ts).
    const views = sc.config.flotilla.gateway_read_views
      ? new ReadViews({ content: contentRoot, images: local("images"), snapshots: local("snapshots"), tasks: local("tasks") }, content)
      : undefined;
    const g = sc.config.grpc;
    const routes = Object.fromEntries(BACKENDS.flatMap((b) => OWNED_SERVICES[b].map((svc) => [svc, addresses[b]])));
    const frontend = new GatewayFront({
      contentReads,
      views,
      routes,
      local: internalAddress(sc),
      // containerd's [grpc] tcp_address: the unix socket stays, TCP is added (mutual TLS with tcp_tls_*).
      tcp: g.tcp_address ? { address: g.tcp_address, tls: loadTls("[grpc] tcp_tls_*", g.tcp_tls_ca, g.tcp_tls_cert, g.tcp_tls_key) } : undefined,
      upstreamTls: sc.channels.tls,
      log: sc.log,
      metrics: sc.metrics,
    });
    const close = async (): Promise<void> => {
      contentReads?.close();
      views?.close();
      content?.close();
    };
    const status = { [uriOf(EVENT_EXCHANGE)]: { exports: { transport: "nats", subjects: `${sc.config.flotilla.events_subject_prefix}.<namespace>.<topic>` } } };
    const ownPlugins = componentPlugins(GATEWAY_COMPONENTS, status);
    sc.server.addService("containerd.services.version.v1.Version", { Version: async () => ({ version: VERSION, revision: REVISION }) });
    sc.server.addService("containerd.services.introspection.v1.Introspection", introspectionHandlers({ uuidFile: path.join(sc.root, "uuid"), addresses, ownPlugins, channels: sc.channels }));
    sc.server.addService("containerd.services.events.v1.Events", eventsHandlers(sc.events, sc.config.flotilla.events_subject_prefix, sc.outbox, sc.stopping));
    // Health per service from its owner's own answer (see src/health.ts).
    sc.server.addService(HEALTH_SERVICE, new OwnerHealth({ routes, own: GATEWAY_SERVICES, stopping: sc.stopping, channels: sc.channels }).handlers());
    return { grpcServices: [...GATEWAY_GRPC, ...BACKENDS.flatMap((b) => OWNED_SERVICES[b])], status, frontend, close };
  },
};

if (require.main?.filename === __filename) void runService(gatewayService);
