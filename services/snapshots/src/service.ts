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
import { Status } from "#libs/grpc/status";
import * as path from "node:path";
import { dialAddress, onThisHost, serviceRoot } from "#libs/config";
import { hostPlatform, uriOf, type ComponentStatus, type RunningService, type ServiceContext } from "#libs/service";
import { NATIVE, OVERLAYFS, WALKING_DIFFER } from "../components";
import { NamespaceEnsurer, NamespaceStoreProxy } from "#libs/clients/namespaces";
import type { Snapshotter } from "#libs/core/snapshots";
import { NativeBackend, OverlayBackend, type SnapshotBackend } from "./local/backends";
import { openSnapshotsDB } from "./local/db";
import { LocalSnapshotLeaseRecorder } from "./local/leases";
import { forgetLayout, LocalSnapshotter } from "./local/metastore";
import { LocalSnapshotterSet } from "./local/set";
import { LocalDiffer, differConfig } from "./local/diff/differ";
import { RemoteContent } from "./local/diff/content";
import { DIFF_SERVICE, diffHandlers } from "./server/diff";
import { LEASES_SERVICE, leaseHolderHandlers } from "#libs/leaseholder";
import { SNAPSHOTS_SERVICE, snapshotsHandlers } from "./server/snapshots";


export async function startSnapshots(sc: ServiceContext): Promise<RunningService> {
  const platform = hostPlatform();
  const db = openSnapshotsDB(sc.root);
  sc.outbox.attach(db);
  const images = dialAddress(sc.config, "images");
  const ensurer = new NamespaceEnsurer(new NamespaceStoreProxy(sc.channels.get(images)), sc.events);
  const status: Record<string, ComponentStatus> = {};
  const loaded = new Map<string, Snapshotter>();
  const disabled = new Set(sc.config.disabled_plugins);

  const candidates: { component: typeof NATIVE; make: (root: string) => SnapshotBackend; check?: (root: string) => void; exportRoot: boolean }[] = [
    { component: OVERLAYFS, make: (r) => new OverlayBackend(r), check: (r) => OverlayBackend.supported(r), exportRoot: true },
    { component: NATIVE, make: (r) => new NativeBackend(r), exportRoot: false },
  ];
  for (const { component: c, ...cand } of candidates) {
    const uri = uriOf(c);
    if (disabled.has(uri)) {
      await forgetLayout(db, c.id);
      status[uri] = { disabled: true };
      continue;
    }
    const root = sc.configOf(c).root_path || path.join(sc.root, c.id);
    const info: ComponentStatus = { platforms: [platform], exports: cand.exportRoot ? { root } : {} };
    try {
      cand.check?.(root);
      const sn = new LocalSnapshotter({ db, backend: cand.make(root), events: sc.outbox, ensureNamespace: (ctx, ns) => ensurer.ensure(ctx, ns), log: sc.log });
      await sn.reconcile();
      await sn.publishLayout();
      loaded.set(c.id, sn);
    } catch (e) {
      sc.log.warn({ err: e, snapshotter: c.id }, "snapshotter not loaded");
      await forgetLayout(db, c.id);
      info.initErr = { code: Status.UNKNOWN, message: `${c.id} is not supported: ${(e as Error).message}: skip plugin` };
    }
    status[uri] = info;
  }
  const set = new LocalSnapshotterSet(loaded);
  const walking = sc.configOf(WALKING_DIFFER);
  // Blob files are read here only when the content process is on this host (or content_root says where they are visible).
  const contentAddress = dialAddress(sc.config, "content");
  const localContent = walking.local_content_reads === false ? undefined : walking.content_root || (onThisHost(contentAddress) ? serviceRoot(sc.config, "content") : undefined);
  const content = new RemoteContent(sc.channels.get(contentAddress), localContent);
  const differ = new LocalDiffer(content, differConfig(walking), sc.log);

  sc.server.addService(SNAPSHOTS_SERVICE, snapshotsHandlers(set));
  sc.server.addService(DIFF_SERVICE, diffHandlers(differ));
  sc.server.addService(LEASES_SERVICE, leaseHolderHandlers(new LocalSnapshotLeaseRecorder(db)));

  status[uriOf(WALKING_DIFFER)] = { platforms: [platform] };
  return {
    grpcServices: [SNAPSHOTS_SERVICE, DIFF_SERVICE, LEASES_SERVICE],
    status,
    close: async () => {
      await differ.close();
      await db.close();
    },
  };
}
