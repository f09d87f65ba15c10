/** The images process: the metadata owner (namespaces; images, leases and GC as they land). */
import * as path from "node:path";
import { runService, GRPC_PLUGIN, type ServiceDefinition } from "../../libs/service";
import { openMetaDB } from "./src/local/db";
import { LocalNamespaceStore } from "./src/local/namespaces";
import { remoteUsage } from "./src/local/usage";
import { namespacesHandlers } from "./src/server/namespaces";

export const imagesService: ServiceDefinition = {
  name: "images",
  async start(sc) {
    const db = openMetaDB(sc.root);
    const s = sc.config.flotilla.services;
    const usage = remoteUsage({ content: s.content.address, snapshots: s.snapshots.address, tasks: s.tasks.address, sandbox: s.sandbox.address }, ["overlayfs", "native"]);
    const namespaces = new LocalNamespaceStore(db, sc.events, usage);
    sc.server.addService("containerd.services.namespaces.v1.Namespaces", namespacesHandlers(namespaces));
    return {
      grpcServices: ["containerd.services.namespaces.v1.Namespaces"],
      plugins: [
        { type: "io.containerd.metadata.v1", id: "lmdb", capabilities: [], exports: { path: path.join(sc.root, "meta.lmdb") } },
        { type: "io.containerd.service.v1", id: "namespaces-service", requires: ["io.containerd.metadata.v1"] },
        { type: GRPC_PLUGIN, id: "namespaces", requires: ["io.containerd.service.v1"] },
      ],
      close: async () => {
        await db.close();
      },
    };
  },
};

if (require.main === module) void runService(imagesService);
