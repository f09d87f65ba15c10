/** gRPC adapter for containerd.services.snapshots.v1.Snapshots: validate, call the snapshotter, convert. */
import { serviceHandlers, type ServiceHandlers } from "#libs/grpc/server";
import { infoToProto } from "../../public";
import { fromTimestamp } from "#libs/proto";
import { kindFromWire, type SnapshotInfo, type SnapshotterSet } from "#libs/core/snapshots";
import { mountToProto } from "#libs/mount";

export const SNAPSHOTS_SERVICE = "containerd.services.snapshots.v1.Snapshots";

export function infoFromProto(i: Record<string, unknown> | null | undefined): SnapshotInfo {
  const x = i ?? {};
  return {
    name: String(x.name ?? ""),
    parent: String(x.parent ?? ""),
    kind: kindFromWire(Number(x.kind ?? 0)),
    labels: (x.labels as Record<string, string>) ?? {},
    created: fromTimestamp(x.created_at as never) ?? new Date(0),
    updated: fromTimestamp(x.updated_at as never) ?? new Date(0),
  };
}

/** containerd sends List results in blocks of 100 infos. */
const LIST_BLOCK = 100;

export function snapshotsHandlers(set: SnapshotterSet): ServiceHandlers<typeof SNAPSHOTS_SERVICE> {
  return serviceHandlers(SNAPSHOTS_SERVICE, {
    Prepare: async (ctx, req) => ({ mounts: (await set.get(req.snapshotter).prepare(ctx, req.key, req.parent, { labels: req.labels })).map(mountToProto) }),
    View: async (ctx, req) => ({ mounts: (await set.get(req.snapshotter).view(ctx, req.key, req.parent, { labels: req.labels })).map(mountToProto) }),
    Mounts: async (ctx, req) => ({ mounts: (await set.get(req.snapshotter).mounts(ctx, req.key)).map(mountToProto) }),
    Commit: async (ctx, req) => {
      await set.get(req.snapshotter).commit(ctx, req.name, req.key, { labels: req.labels });
      return {};
    },
    Remove: async (ctx, req) => {
      await set.get(req.snapshotter).remove(ctx, req.key);
      return {};
    },
    Stat: async (ctx, req) => ({ info: infoToProto(await set.get(req.snapshotter).stat(ctx, req.key)) }),
    Update: async (ctx, req) => {
      const info = infoFromProto(req.info);
      return { info: infoToProto(await set.get(req.snapshotter).update(ctx, info, req.update_mask?.paths ?? [])) };
    },
    List: async (ctx, req, send) => {
      const sn = set.get(req.snapshotter);
      let block: Record<string, unknown>[] = [];
      await sn.walk(ctx, async (info) => {
        block.push(infoToProto(info));
        if (block.length >= LIST_BLOCK) {
          const b = block;
          block = [];
          await send({ info: b });
        }
      }, req.filters ?? []);
      if (block.length) await send({ info: block });
    },
    Usage: async (ctx, req) => await set.get(req.snapshotter).usage(ctx, req.key),
    Cleanup: async (ctx, req) => {
      await set.get(req.snapshotter).cleanup(ctx);
      return {};
    },
  });
}
