/** The transfer process: transfer.v1.Transfer and streaming.v1.Streaming (containerd v2's Transfer API). */
import { runService, GRPC_PLUGIN, type ServiceDefinition } from "../../libs/service";
import { dialAddress, pluginConfig } from "../../libs/config";
import { ContentStoreProxy } from "../../libs/clients/content";
import { DiffProxy } from "../../libs/clients/diff";
import { ImageStoreProxy } from "../../libs/clients/images";
import { LeaseManagerProxy } from "../../libs/clients/leases";
import { NamespaceStoreProxy } from "../../libs/clients/namespaces";
import { SnapshotterSetProxy } from "../../libs/clients/snapshots";
import { DEFAULT_TRANSFER_CONFIG, type TransferConfig } from "./src/local/deps";
import { BlobFetcher } from "./src/local/fetch";
import { LocalTransferService } from "./src/local/service";
import { KeyedMutex, Semaphore } from "./src/local/util";
import { LocalStreamManager, STREAMING_SERVICE, streamingHandlers } from "./src/server/streams";
import { TRANSFER_SERVICE, transferHandlers } from "./src/server/transfer";

export const TRANSFER_PLUGIN = "io.containerd.transfer.v1";

function transferConfig(raw: Record<string, unknown>): TransferConfig {
  const n = (k: string, d: number): number => (typeof raw[k] === "number" || typeof raw[k] === "bigint" ? Math.max(1, Number(raw[k])) : d);
  return {
    maxConcurrentDownloads: n("max_concurrent_downloads", DEFAULT_TRANSFER_CONFIG.maxConcurrentDownloads),
    maxConcurrentUploads: n("max_concurrent_uploaded_layers", DEFAULT_TRANSFER_CONFIG.maxConcurrentUploads),
    userAgent: DEFAULT_TRANSFER_CONFIG.userAgent,
  };
}

export const transferService: ServiceDefinition = {
  name: "transfer",
  async start(sc) {
    const content = new ContentStoreProxy(dialAddress(sc.config, "content"), { writeWindow: 4 });
    const config = transferConfig(pluginConfig(sc.config, TRANSFER_PLUGIN, "local"));
    const local = new LocalTransferService({
      content,
      images: new ImageStoreProxy(dialAddress(sc.config, "images")),
      leases: new LeaseManagerProxy(dialAddress(sc.config, "images")),
      namespaces: new NamespaceStoreProxy(dialAddress(sc.config, "images")),
      snapshots: new SnapshotterSetProxy(dialAddress(sc.config, "snapshots")),
      diff: new DiffProxy(dialAddress(sc.config, "snapshots")),
      fetcher: new BlobFetcher(content),
      locks: new KeyedMutex(),
      config,
      downloads: new Semaphore(config.maxConcurrentDownloads),
      uploads: new Semaphore(config.maxConcurrentUploads),
    });
    const streams = new LocalStreamManager();
    sc.server.addService(STREAMING_SERVICE, streamingHandlers(streams));
    sc.server.addService(TRANSFER_SERVICE, transferHandlers(local, streams, sc.log));
    return {
      grpcServices: [TRANSFER_SERVICE, STREAMING_SERVICE],
      plugins: [
        { type: "io.containerd.streaming.v1", id: "manager", requires: ["io.containerd.metadata.v1"] },
        {
          type: TRANSFER_PLUGIN, id: "local", requires: ["io.containerd.lease.v1", "io.containerd.metadata.v1", "io.containerd.diff.v1"],
          exports: { max_concurrent_downloads: String(config.maxConcurrentDownloads), max_concurrent_uploaded_layers: String(config.maxConcurrentUploads) },
        },
        { type: GRPC_PLUGIN, id: "transfer", requires: [TRANSFER_PLUGIN, "io.containerd.streaming.v1"] },
        { type: GRPC_PLUGIN, id: "streaming", requires: ["io.containerd.streaming.v1"] },
      ],
    };
  },
};

if (require.main === module) void runService(transferService);
