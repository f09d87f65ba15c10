/**
 * Snapshot storage layouts. A backend only manages directories named by numeric id under
 * `<root>/snapshots/` and builds mounts from them; keys, namespaces, parents and labels live in the
 * metadata database (metastore.ts).
 *
 * Directory life cycle, safe against kill -9 at any point:
 *   stage:   <root>/snapshots/new-XXXXXX         (outside any transaction; removed at start-up if left)
 *   create:  rename new-XXXXXX -> <id>            (inside the metadata transaction that records <id>)
 *   remove:  rename <id> -> rm-<id>, then delete  (after the transaction that forgot <id>)
 * so at start-up every entry that is not a recorded id is garbage (`reconcile`).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { SnapshotKinds, type Mount, type SnapshotKind } from "#libs/core/snapshots";
import { copyTree, diskUsage, removeTree } from "./fsutil";
import * as sys from "#libs/sys/linux";
import { mountsOf, upperOf, type MountLayout } from "../../public";

export type { MountLayout };

export interface SnapshotBackend {
  /** Snapshotter name: `overlayfs`, `native`. */
  readonly name: string;
  readonly root: string;
  /** Prepare the directory of a new snapshot in a temporary place; resolves with its path. */
  stage(kind: SnapshotKind, chain: number[]): Promise<string>;
  /** Where snapshot `id` lives once created. */
  dir(id: number): string;
  /** The host-mountable mounts of a snapshot. */
  mounts(id: number, kind: SnapshotKind, chain: number[]): Mount[];
  /** What `mountsOf` needs to build the same mounts without this object (read views, other processes). */
  readonly layout: MountLayout;
  /** The directory whose usage is the snapshot's own usage. */
  usageDir(id: number): string;
  /** Whether usage is measured for this kind (views report zero, as containerd's do). */
  measured(kind: SnapshotKind): boolean;
}

export function snapshotsDir(root: string): string {
  return path.join(root, "snapshots");
}

/** containerd's overlayfs layout: <root>/snapshots/<id>/{fs,work}. */
export class OverlayBackend implements SnapshotBackend {
  readonly name = "overlayfs";
  readonly layout: MountLayout;

  constructor(readonly root: string) {
    fs.mkdirSync(snapshotsDir(root), { recursive: true, mode: 0o700 });
    sys.setTopDir(snapshotsDir(root));
    this.layout = { name: "overlayfs", root, indexOff: fs.existsSync("/sys/module/overlay/parameters/index") };
  }

  upper(id: number): string {
    return upperOf(this.root, id);
  }
  work(id: number): string {
    return path.join(this.root, "snapshots", String(id), "work");
  }
  dir(id: number): string {
    return path.join(this.root, "snapshots", String(id));
  }
  usageDir(id: number): string {
    return this.upper(id);
  }
  measured(kind: SnapshotKind): boolean {
    return kind !== SnapshotKinds.View;
  }

  async stage(kind: SnapshotKind, chain: number[]): Promise<string> {
    // A handful of cheap metadata calls: done synchronously (no thread-pool round trips).
    const td = fs.mkdtempSync(path.join(snapshotsDir(this.root), "new-"));
    try {
      fs.mkdirSync(path.join(td, "fs"), { mode: 0o755 });
      fs.chmodSync(path.join(td, "fs"), 0o755);
      if (kind === SnapshotKinds.Active) fs.mkdirSync(path.join(td, "work"), { mode: 0o711 });
      if (chain.length > 0) {
        const st = fs.statSync(this.upper(chain[0]!));
        fs.lchownSync(path.join(td, "fs"), st.uid, st.gid);
      }
      return td;
    } catch (e) {
      await removeTree(td);
      throw e;
    }
  }

  mounts(id: number, kind: SnapshotKind, chain: number[]): Mount[] {
    return mountsOf(this.layout, id, kind, chain);
  }

  /** Mount a tiny overlay under the root to see whether the kernel and the backing filesystem support it. */
  static supported(root: string): void {
    fs.mkdirSync(root, { recursive: true, mode: 0o700 });
    const base = fs.mkdtempSync(path.join(root, "check-"));
    try {
      for (const d of ["lower", "upper", "work", "merged"]) fs.mkdirSync(path.join(base, d));
      const merged = path.join(base, "merged");
      sys.mount("overlay", merged, "overlay", 0, `lowerdir=${path.join(base, "lower")},upperdir=${path.join(base, "upper")},workdir=${path.join(base, "work")}`);
      sys.unmount(merged, sys.MNT_DETACH);
    } finally {
      fs.rmSync(base, { recursive: true, force: true });
    }
  }
}

/** containerd's native layout: <root>/snapshots/<id> holds a full copy of the parent. */
export class NativeBackend implements SnapshotBackend {
  readonly name = "native";
  readonly layout: MountLayout;

  constructor(readonly root: string) {
    fs.mkdirSync(snapshotsDir(root), { recursive: true, mode: 0o700 });
    sys.setTopDir(snapshotsDir(root));
    this.layout = { name: "native", root };
  }

  dir(id: number): string {
    return path.join(this.root, "snapshots", String(id));
  }
  usageDir(id: number): string {
    return this.dir(id);
  }
  measured(kind: SnapshotKind): boolean {
    return kind !== SnapshotKinds.View;
  }

  async stage(kind: SnapshotKind, chain: number[]): Promise<string> {
    // Synchronous like the overlay's: a parent small enough to copy in-process is copied with
    // synchronous calls anyway, and a big one goes to a `cp` child.
    const td = fs.mkdtempSync(path.join(snapshotsDir(this.root), "new-"));
    try {
      fs.chmodSync(td, 0o755);
      if (kind === SnapshotKinds.Active && chain.length > 0) await copyTree(this.dir(chain[0]!), td);
      return td;
    } catch (e) {
      await removeTree(td);
      throw e;
    }
  }

  mounts(id: number, kind: SnapshotKind, chain: number[]): Mount[] {
    return mountsOf(this.layout, id, kind, chain);
  }
}

/** Move a snapshot's directory out of the way (rm-<id>) and delete it in the background. */
export function discard(backend: SnapshotBackend, id: number, onError: (e: unknown) => void): Promise<void> {
  const from = backend.dir(id);
  const to = path.join(snapshotsDir(backend.root), `rm-${id}`);
  try {
    fs.renameSync(from, to);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return Promise.resolve();
    onError(e);
    return Promise.resolve();
  }
  return removeTree(to).catch(onError);
}

/**
 * Remove every entry of `<root>/snapshots` that is not the directory of a known id. With
 * `includeStaging` false, `new-*` directories (snapshots being prepared right now) are kept.
 * Resolves with the removed names.
 */
export async function removeUnknown(backend: SnapshotBackend, known: (id: number) => boolean, includeStaging: boolean): Promise<string[]> {
  const dir = snapshotsDir(backend.root);
  const removed: string[] = [];
  for (const name of await fs.promises.readdir(dir)) {
    if (/^[0-9]+$/.test(name) && known(Number(name))) continue;
    if (!includeStaging && (name.startsWith("new-") || name.startsWith(".apply-"))) continue;
    await removeTree(path.join(dir, name));
    removed.push(name);
  }
  return removed;
}

export function usageOf(backend: SnapshotBackend, id: number): { size: number; inodes: number } {
  return diskUsage(backend.usageDir(id));
}
