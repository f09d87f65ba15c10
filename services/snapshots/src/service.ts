/**
 * Wiring of the snapshots process: the overlayfs and native snapshotters (metadata in one LMDB
 * database, reconciled with the directories before serving), the walking differ, and the gRPC
 * adapters for Snapshots, Diff and the snapshot half of Leases resources.
 *
 * Config (all optional):
 *   [plugins."io.containerd.snapshotter.v1.overlayfs"]  root_path = "<root>/snapshots/overlayfs"
 *   [plugins."io.containerd.snapshotter.v1.native"]     root_path = "<root>/snapshots/native"
 *   [plugins."io.containerd.differ.v1.walking"]
 *     max_uncompressed_bytes = 68719476736   # a layer expanding beyond this is refused (decompression bomb)
 *     allow_devices = true                   # refuse char/block device entries when false
 *     workers = 2                            # layer-apply worker threads
 *     local_content_reads = true             # read layer blobs straight from the content service's files
 *     content_root = "<root>/content"        #   when visible here (checked by size and digest; else gRPC)
 */
import { Status } from "../../../libs/grpc/status";
import * as path from "node:path";
import { dialAddress, pluginConfig, serviceRoot } from "../../../libs/config";
import { GRPC_PLUGIN, hostPlatform, type PluginInfo, type RunningService, type ServiceContext } from "../../../libs/service";
import { NamespaceEnsurer, NamespaceStoreProxy } from "../../../libs/clients/namespaces";
import type { Snapshotter } from "../../../libs/core/snapshots";
import { NativeBackend, OverlayBackend, type SnapshotBackend } from "./local/backends";
import { openSnapshotsDB } from "./local/db";
import { LocalSnapshotLeaseRecorder } from "./local/leases";
import { forgetLayout, LocalSnapshotter } from "./local/metastore";
import { LocalSnapshotterSet } from "./local/set";
import { LocalDiffer, differConfig } from "./local/diff/differ";
import { RemoteContent } from "./local/diff/content";
import { DIFF_SERVICE, diffHandlers } from "./server/diff";
import { LEASES_SERVICE, leaseHolderHandlers } from "../../../libs/leaseholder";
import { SNAPSHOTS_SERVICE, snapshotsHandlers } from "./server/snapshots";

export const SNAPSHOTTER_PLUGIN = "io.containerd.snapshotter.v1";
export const DIFFER_PLUGIN = "io.containerd.differ.v1";
export const SERVICE_PLUGIN = "io.containerd.service.v1";

function str(v: unknown, dflt: string): string {
  return typeof v === "string" && v !== "" ? v : dflt;
}

export async function startSnapshots(sc: ServiceContext): Promise<RunningService> {
  const platform = hostPlatform();
  const db = openSnapshotsDB(sc.root);
  const images = dialAddress(sc.config, "images");
  const ensurer = new NamespaceEnsurer(new NamespaceStoreProxy(images), sc.events);
  const plugins: PluginInfo[] = [];
  const loaded = new Map<string, Snapshotter>();
  const disabled = new Set(sc.config.disabled_plugins);

  const candidates: { id: string; make: (root: string) => SnapshotBackend; check?: (root: string) => void; exportRoot: boolean }[] = [
    { id: "overlayfs", make: (r) => new OverlayBackend(r), check: (r) => OverlayBackend.supported(r), exportRoot: true },
    { id: "native", make: (r) => new NativeBackend(r), exportRoot: false },
  ];
  for (const c of candidates) {
    const uri = `${SNAPSHOTTER_PLUGIN}.${c.id}`;
    if (disabled.has(uri)) {
      await forgetLayout(db, c.id);
      continue;
    }
    const root = str(pluginConfig(sc.config, SNAPSHOTTER_PLUGIN, c.id).root_path, path.join(sc.root, c.id));
    const info: PluginInfo = { type: SNAPSHOTTER_PLUGIN, id: c.id, platforms: [platform], exports: c.exportRoot ? { root } : {} };
    try {
      c.check?.(root);
      const sn = new LocalSnapshotter({ db, backend: c.make(root), events: sc.events, ensureNamespace: (ctx, ns) => ensurer.ensure(ctx, ns), log: sc.log });
      await sn.reconcile();
      await sn.publishLayout();
      loaded.set(c.id, sn);
    } catch (e) {
      sc.log.warn({ err: e, snapshotter: c.id }, "snapshotter not loaded");
      await forgetLayout(db, c.id);
      info.initErr = { code: Status.UNKNOWN, message: `${c.id} is not supported: ${(e as Error).message}: skip plugin` };
    }
    plugins.push(info);
  }
  const set = new LocalSnapshotterSet(loaded);
  const walking = pluginConfig(sc.config, DIFFER_PLUGIN, "walking");
  const localContent = walking.local_content_reads === false ? undefined : str(walking.content_root, serviceRoot(sc.config, "content"));
  const content = new RemoteContent(dialAddress(sc.config, "content"), localContent);
  const differ = new LocalDiffer(content, differConfig(walking), sc.log);

  sc.server.addService(SNAPSHOTS_SERVICE, snapshotsHandlers(set));
  sc.server.addService(DIFF_SERVICE, diffHandlers(differ));
  sc.server.addService(LEASES_SERVICE, leaseHolderHandlers(new LocalSnapshotLeaseRecorder(db)));

  plugins.push(
    { type: DIFFER_PLUGIN, id: "walking", requires: ["io.containerd.metadata.v1"], platforms: [platform] },
    { type: SERVICE_PLUGIN, id: "snapshots-service", requires: ["io.containerd.event.v1", "io.containerd.metadata.v1"] },
    { type: SERVICE_PLUGIN, id: "diff-service", requires: [DIFFER_PLUGIN] },
    { type: GRPC_PLUGIN, id: "snapshots", requires: [SERVICE_PLUGIN] },
    { type: GRPC_PLUGIN, id: "diff", requires: [SERVICE_PLUGIN] },
  );
  return {
    grpcServices: [SNAPSHOTS_SERVICE, DIFF_SERVICE, LEASES_SERVICE],
    plugins,
    close: async () => {
      await differ.close();
      await db.close();
    },
  };
}
