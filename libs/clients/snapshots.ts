/** Snapshotter over gRPC (containerd.services.snapshots.v1.Snapshots): callers cannot tell it from a local one. */
import type { CallContext } from "../context";
import { RpcClient, type Channel } from "../grpc/client";
import { fromTimestamp, toTimestamp } from "../proto";
import {
  kindFromWire, type Mount, type SnapshotInfo, type SnapshotOptions, type Snapshotter, type SnapshotterSet, type SnapshotUsage, type WalkFn,
} from "../core/snapshots";
import { mountFromProto } from "../mount";
import { errInvalidArgument } from "../errdefs";

export const SNAPSHOTS_SERVICE = "containerd.services.snapshots.v1.Snapshots";

type Wire = Record<string, unknown>;

function infoFromWire(i: Wire | null | undefined): SnapshotInfo {
  const x = i ?? {};
  return {
    name: String(x.name ?? ""),
    parent: String(x.parent ?? ""),
    kind: kindFromWire(Number(x.kind ?? 0)),
    labels: { ...((x.labels as Record<string, string>) ?? {}) },
    created: fromTimestamp(x.created_at as never) ?? new Date(0),
    updated: fromTimestamp(x.updated_at as never) ?? new Date(0),
  };
}

export class SnapshotterProxy implements Snapshotter {
  constructor(private readonly rpc: RpcClient<typeof SNAPSHOTS_SERVICE>, readonly snapshotter: string) {}

  /** A proxy for `snapshotter` at `address` (a Flotilla snapshots process or the gateway). */
  static connect(channel: Channel, snapshotter: string): SnapshotterProxy {
    return new SnapshotterProxy(new RpcClient(channel, SNAPSHOTS_SERVICE), snapshotter);
  }

  async stat(ctx: CallContext, key: string): Promise<SnapshotInfo> {
    return infoFromWire((await this.rpc.unary(ctx, "Stat", { snapshotter: this.snapshotter, key })).info);
  }
  async update(ctx: CallContext, info: Pick<SnapshotInfo, "name" | "labels">, paths: readonly string[] = []): Promise<SnapshotInfo> {
    const req = {
      snapshotter: this.snapshotter,
      info: { name: info.name, labels: info.labels, created_at: toTimestamp(0), updated_at: toTimestamp(0) },
      update_mask: paths.length ? { paths: [...paths] } : null,
    };
    return infoFromWire((await this.rpc.unary(ctx, "Update", req)).info);
  }
  async usage(ctx: CallContext, key: string): Promise<SnapshotUsage> {
    const r = await this.rpc.unary(ctx, "Usage", { snapshotter: this.snapshotter, key });
    return { size: Number(r.size ?? 0), inodes: Number(r.inodes ?? 0) };
  }
  async mounts(ctx: CallContext, key: string): Promise<Mount[]> {
    return ((await this.rpc.unary(ctx, "Mounts", { snapshotter: this.snapshotter, key })).mounts ?? []).map(mountFromProto);
  }
  async prepare(ctx: CallContext, key: string, parent: string, opts?: SnapshotOptions): Promise<Mount[]> {
    return ((await this.rpc.unary(ctx, "Prepare", { snapshotter: this.snapshotter, key, parent, labels: opts?.labels ?? {} })).mounts ?? []).map(mountFromProto);
  }
  async view(ctx: CallContext, key: string, parent: string, opts?: SnapshotOptions): Promise<Mount[]> {
    return ((await this.rpc.unary(ctx, "View", { snapshotter: this.snapshotter, key, parent, labels: opts?.labels ?? {} })).mounts ?? []).map(mountFromProto);
  }
  async commit(ctx: CallContext, name: string, key: string, opts?: SnapshotOptions): Promise<void> {
    await this.rpc.unary(ctx, "Commit", { snapshotter: this.snapshotter, name, key, labels: opts?.labels ?? {} });
  }
  async remove(ctx: CallContext, key: string): Promise<void> {
    await this.rpc.unary(ctx, "Remove", { snapshotter: this.snapshotter, key });
  }
  async walk(ctx: CallContext, fn: WalkFn, filters: readonly string[] = []): Promise<void> {
    for await (const m of this.rpc.serverStream(ctx, "List", { snapshotter: this.snapshotter, filters: [...filters] })) {
      for (const i of (m.info as Wire[]) ?? []) await fn(infoFromWire(i));
    }
  }
  async cleanup(ctx: CallContext): Promise<void> {
    await this.rpc.unary(ctx, "Cleanup", { snapshotter: this.snapshotter });
  }
}

/** Every snapshotter name reached through one address; unknown names fail at the server (NotFound). */
export class SnapshotterSetProxy implements SnapshotterSet {
  private readonly rpc: RpcClient<typeof SNAPSHOTS_SERVICE>;
  private readonly cache = new Map<string, SnapshotterProxy>();
  constructor(channel: Channel, private readonly known: string[] = ["overlayfs", "native"]) {
    this.rpc = new RpcClient(channel, SNAPSHOTS_SERVICE);
  }
  /** Resolve once the owning process answers (a connection is up), or reject after `ms`. */
  waitForReady(ms: number): Promise<void> {
    return this.rpc.waitForReady(ms);
  }
  get(name: string): Snapshotter {
    if (!name) throw errInvalidArgument("snapshotter argument missing");
    let p = this.cache.get(name);
    if (!p) this.cache.set(name, (p = new SnapshotterProxy(this.rpc, name)));
    return p;
  }
  names(): string[] {
    return [...this.known];
  }
}
