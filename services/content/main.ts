/** The content process: containerd's content store (Content service), blobs on disk, metadata in LMDB. */
import * as path from "node:path";
import { dialAddress } from "../../libs/config";
import { runService, GRPC_PLUGIN, type ServiceDefinition } from "../../libs/service";
import { NamespaceEnsurer, NamespaceStoreProxy } from "../../libs/clients/namespaces";
import { openContentDB } from "./src/local/db";
import { LocalLeaseResources } from "./src/local/leases";
import { LocalContentStore } from "./src/local/store";
import { CONTENT_SERVICE, registerContentService } from "./src/server/content";
import { LEASES_SERVICE, leaseHolderHandlers } from "../../libs/leaseholder";

export const contentService: ServiceDefinition = {
  name: "content",
  async start(sc) {
    const db = openContentDB(sc.root);
    // The events let a namespace deleted elsewhere be created again by the next write at once (not
    // only when its cache entry expires).
    const namespaces = new NamespaceEnsurer(new NamespaceStoreProxy(dialAddress(sc.config, "images")), sc.events);
    const store = await LocalContentStore.open({
      root: sc.root,
      db,
      events: sc.events,
      ensureNamespace: (ctx, ns) => namespaces.ensure(ctx, ns),
      log: sc.log,
    });
    registerContentService(sc.server, store);
    sc.server.addService(LEASES_SERVICE, leaseHolderHandlers(new LocalLeaseResources(db)));
    return {
      grpcServices: [CONTENT_SERVICE],
      plugins: [
        { type: "io.containerd.content.v1", id: "content", exports: { root: sc.root, metadata: path.join(sc.root, "meta.lmdb") } },
        { type: "io.containerd.service.v1", id: "content-service", requires: ["io.containerd.content.v1"] },
        { type: GRPC_PLUGIN, id: "content", requires: ["io.containerd.service.v1"] },
      ],
      close: async () => {
        namespaces.close();
        store.close();
        await db.close();
      },
    };
  },
};

if (require.main === module) void runService(contentService);
