/** The transfer process: transfer.v1.Transfer and streaming.v1.Streaming (containerd v2's Transfer API). */
import { runService, uriOf, type ConfigOf, type ServiceDefinition } from "#libs/service";
import { dialAddress } from "#libs/config";
import { ContentStoreProxy } from "#libs/clients/content";
import { DiffProxy } from "#libs/clients/diff";
import { ImageStoreProxy } from "#libs/clients/images";
import { LeaseManagerProxy } from "#libs/clients/leases";
import { NamespaceStoreProxy } from "#libs/clients/namespaces";
import { SnapshotterSetProxy } from "#libs/clients/snapshots";
import { HttpAgents } from "#libs/registry";
import { DEFAULT_TRANSFER_CONFIG, type TransferConfig } from "./src/local/deps";
import { BlobFetcher } from "./src/local/fetch";
import { LocalTransferService } from "./src/local/service";
import { KeyedMutex, Semaphore } from "./src/local/util";
import { LocalStreamManager, STREAMING_SERVICE, streamingHandlers } from "./src/server/streams";
import { TRANSFER_SERVICE, transferHandlers } from "./src/server/transfer";

import { TRANSFER_COMPONENTS, TRANSFER_LOCAL } from "./components";

function transferConfig(raw: ConfigOf<typeof TRANSFER_LOCAL>): TransferConfig {
  const n = (v: number | undefined, d: number): number => (v === undefined ? d : Math.max(1, v));
  return {
    maxConcurrentDownloads: n(raw.max_concurrent_downloads, DEFAULT_TRANSFER_CONFIG.maxConcurrentDownloads),
    maxConcurrentUploads: n(raw.max_concurrent_uploaded_layers, DEFAULT_TRANSFER_CONFIG.maxConcurrentUploads),
    userAgent: DEFAULT_TRANSFER_CONFIG.userAgent,
  };
}

export const transferService: ServiceDefinition = {
  name: "transfer",
  components: TRANSFER_COMPONENTS,
  async start(sc) {
    const content = new ContentStoreProxy(sc.channels.get(dialAddress(sc.config, "content")), { writeWindow: 4 });
    const config = transferConfig(sc.configOf(TRANSFER_LOCAL));
    const agents = new HttpAgents();
    const local = new LocalTransferService({
      content,
      images: new ImageStoreProxy(sc.channels.get(dialAddress(sc.config, "images"))),
      leases: new LeaseManagerProxy(sc.channels.get(dialAddress(sc.config, "images"))),
      namespaces: new NamespaceStoreProxy(sc.channels.get(dialAddress(sc.config, "images"))),
      snapshots: new SnapshotterSetProxy(sc.channels.get(dialAddress(sc.config, "snapshots"))),
      diff: new DiffProxy(sc.channels.get(dialAddress(sc.config, "snapshots"))),
      fetcher: new BlobFetcher(content),
      locks: new KeyedMutex(),
      config,
      downloads: new Semaphore(config.maxConcurrentDownloads),
      uploads: new Semaphore(config.maxConcurrentUploads),
      agents,
    });
    const streams = new LocalStreamManager();
    sc.server.addService(STREAMING_SERVICE, streamingHandlers(streams));
    sc.server.addService(TRANSFER_SERVICE, transferHandlers(local, streams, sc.log));
    return {
      grpcServices: [TRANSFER_SERVICE, STREAMING_SERVICE],
      status: {
        [uriOf(TRANSFER_LOCAL)]: { exports: { max_concurrent_downloads: String(config.maxConcurrentDownloads), max_concurrent_uploaded_layers: String(config.maxConcurrentUploads) } },
      },
      close: async () => agents.destroy(),
    };
  },
};

if (require.main?.filename === __filename) void runService(transferService);
