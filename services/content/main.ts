/** The content process: containerd's content store (Content service), blobs on disk, metadata in LMDB. */
import * as path from "node:path";
import { dialAddress } from "#libs/config";
import { runService, uriOf, type ServiceDefinition } from "#libs/service";
import { CONTENT_COMPONENTS, CONTENT_STORE } from "./components";
import { NamespaceEnsurer, NamespaceStoreProxy } from "#libs/clients/namespaces";
import { openContentDB } from "./src/local/db";
import { LocalLeaseResources } from "./src/local/leases";
import { LocalContentStore } from "./src/local/store";
import { CONTENT_SERVICE, registerContentService } from "./src/server/content";
import { LEASES_SERVICE, leaseHolderHandlers } from "#libs/leaseholder";

export const contentService: ServiceDefinition = {
  name: "content",
  components: CONTENT_COMPONENTS,
  async start(sc) {
    const db = openContentDB(sc.root);
    sc.outbox.attach(db);
    // The events let a namespace deleted elsewhere be created again by the next write at once (not
    // only when its cache entry expires).
    const namespaces = new NamespaceEnsurer(new NamespaceStoreProxy(sc.channels.get(dialAddress(sc.config, "images"))), sc.events);
    const store = await LocalContentStore.open({
      root: sc.root,
      db,
      events: sc.outbox,
      ensureNamespace: (ctx, ns) => namespaces.ensure(ctx, ns),
      log: sc.log,
      buffers: sc.buffers,
    });
    registerContentService(sc.server, store);
    sc.server.addService(LEASES_SERVICE, leaseHolderHandlers(new LocalLeaseResources(db)));
    return {
      grpcServices: [CONTENT_SERVICE],
      status: { [uriOf(CONTENT_STORE)]: { exports: { root: sc.root, metadata: path.join(sc.root, "meta.lmdb") } } },
      close: async () => {
        namespaces.close();
        store.close();
        await db.close();
      },
    };
  },
};

if (require.main?.filename === __filename) void runService(contentService);
