/** gRPC adapter for containerd.services.snapshots.v1.Snapshots: validate, call the snapshotter, convert. */
import { serviceHandlers, type Msg, type ServiceHandlers } from "../../../../libs/grpc/server";
import type { SnapshotsDB } from "../local/db";
import { readSnapshot } from "../local/metastore";
import { fromTimestamp, toTimestamp } from "../../../../libs/proto";
import { kindFromWire, kindToWire, type Mount, type SnapshotInfo, type SnapshotterSet } from "../../../../libs/core/snapshots";
import type { Input } from "../../../../libs/proto/types";

export const SNAPSHOTS_SERVICE = "containerd.services.snapshots.v1.Snapshots";

export const mountToProto = (m: Mount): Input["containerd.types.Mount"] => ({ type: m.type, source: m.source, target: m.target ?? "", options: m.options });
export const mountFromProto = (m: { type?: string; source?: string; target?: string; options?: string[] }): Mount => ({
  type: m.type ?? "", source: m.source ?? "", ...(m.target ? { target: m.target } : {}), options: m.options ?? [],
});

export function infoToProto(i: SnapshotInfo): Input["containerd.services.snapshots.v1.Info"] {
  return { name: i.name, parent: i.parent, kind: kindToWire(i.kind), created_at: toTimestamp(i.created), updated_at: toTimestamp(i.updated), labels: i.labels };
}

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

/** Stat answered from a read-only view of the snapshots database (the gateway's): the info when found, else undefined. */
export function statFromView(db: SnapshotsDB, ns: string, req: Msg): Msg | undefined {
  const s = readSnapshot(db, String(req.snapshotter ?? ""), ns, String(req.key ?? ""));
  return s && { info: infoToProto(s.info) };
}

/** Mounts answered from a read-only view: the mounts of an active snapshot or view when found, else undefined. */
export function mountsFromView(db: SnapshotsDB, ns: string, req: Msg): Msg | undefined {
  const m = readSnapshot(db, String(req.snapshotter ?? ""), ns, String(req.key ?? ""))?.mounts;
  return m && { mounts: m.map(mountToProto) };
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
