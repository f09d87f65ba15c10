/**
 * Where the collector reads objects from and deletes garbage in: the processes that own the data,
 * through their ordinary containerd RPCs (Content/List, ListStatuses, Delete, Abort; Snapshots/List,
 * Remove; Containers/List; sandbox Store/List; Introspection/Plugins for the loaded snapshotters).
 * Every call runs in the namespace of its context. The sweep's deletes carry GC_SWEEP_HEADER.
 */
import { withHeaders, type CallContext } from "../../../../../libs/context";
import { isNotImplemented } from "../../../../../libs/errdefs";
import { RpcClient, type ChannelPool } from "../../../../../libs/grpc/client";
import type { Msg } from "../../../../../libs/grpc/server";
import { fromTimestamp } from "../../../../../libs/proto";
import { GC_SWEEP_HEADER, type GraphSnapshot } from "../../../../../libs/core/gc";

export interface ContentObject {
  digest: string;
  labels: Record<string, string>;
}

export interface IngestObject {
  ref: string;
  expected: string;
  updatedAt: Date;
}

export interface ContainerObject {
  snapshotter: string;
  snapshotKey: string;
  labels: Record<string, string>;
}

export interface ContentSource {
  list(ctx: CallContext): Promise<ContentObject[]>;
  ingests(ctx: CallContext): Promise<IngestObject[]>;
  delete(ctx: CallContext, digest: string, pass: number): Promise<void>;
  abort(ctx: CallContext, ref: string, pass: number): Promise<void>;
}

export interface SnapshotsSource {
  /** The snapshotters the snapshots process has loaded. */
  snapshotters(ctx: CallContext): Promise<string[]>;
  list(ctx: CallContext, snapshotter: string): Promise<GraphSnapshot[]>;
  remove(ctx: CallContext, snapshotter: string, key: string, pass: number): Promise<void>;
}

/** Containers and sandboxes: roots only (their snapshots and gc.ref labels). */
export interface RootsSource {
  containers(ctx: CallContext): Promise<ContainerObject[]>;
  /** Label maps of sandboxes (their gc.ref labels are roots). */
  sandboxes(ctx: CallContext): Promise<Record<string, string>[]>;
}

export interface GCSources {
  content: ContentSource;
  snapshots: SnapshotsSource;
  roots: RootsSource;
  /**
   * Resolves once every source answers, or after `ms` with the names of those that still do not (the
   * processes of a stack start together: the first pass waits for them instead of skipping them).
   */
  ready?(ms: number): Promise<string[]>;
}

const sweepHeaders = (pass: number): Record<string, string> => ({ [GC_SWEEP_HEADER]: String(pass) });

export interface RemoteAddresses {
  content: string;
  snapshots: string;
  tasks: string;
  sandbox: string;
}

export const SNAPSHOTTER_PLUGIN = "io.containerd.snapshotter.v1";

/** The sources over the other processes' gRPC services. */
export function remoteSources(a: RemoteAddresses, channels: ChannelPool): GCSources {
  const content = new RpcClient(channels.get(a.content), "containerd.services.content.v1.Content");
  const snapshots = new RpcClient(channels.get(a.snapshots), "containerd.services.snapshots.v1.Snapshots");
  const introspection = new RpcClient(channels.get(a.snapshots), "containerd.services.introspection.v1.Introspection");
  const containers = new RpcClient(channels.get(a.tasks), "containerd.services.containers.v1.Containers");
  const sandboxes = new RpcClient(channels.get(a.sandbox), "containerd.services.sandbox.v1.Store");
  // The loaded snapshotters rarely change: asked again after a few seconds (a snapshots process that
  // went down meanwhile fails the pass's List calls instead).
  let known: { names: string[]; at: number } | undefined;
  const all = { content, snapshots, tasks: containers, sandbox: sandboxes };
  return {
    async ready(ms) {
      const late = await Promise.all(Object.entries(all).map(([name, c]) => c.waitForReady(ms).then(() => undefined, () => name)));
      return late.filter((n): n is string => n !== undefined);
    },
    content: {
      async list(ctx) {
        const out: ContentObject[] = [];
        for await (const m of content.serverStream(ctx, "List", { filters: [] })) {
          for (const i of (m.info as Msg[] | undefined) ?? []) out.push({ digest: String(i.digest), labels: (i.labels as Record<string, string>) ?? {} });
        }
        return out;
      },
      async ingests(ctx) {
        const r = await content.unary(ctx, "ListStatuses", { filters: [] });
        return ((r.statuses as Msg[] | undefined) ?? []).map((s) => ({
          ref: String(s.ref ?? ""),
          expected: String(s.expected ?? ""),
          updatedAt: fromTimestamp(s.updated_at) ?? new Date(0),
        }));
      },
      async delete(ctx, digest, pass) {
        await content.unary(withHeaders(ctx, sweepHeaders(pass)), "Delete", { digest });
      },
      async abort(ctx, ref, pass) {
        await content.unary(withHeaders(ctx, sweepHeaders(pass)), "Abort", { ref });
      },
    },
    snapshots: {
      async snapshotters(ctx) {
        if (known && Date.now() - known.at < 5000) return known.names;
        const r = await introspection.unary(ctx, "Plugins", { filters: [`type==${SNAPSHOTTER_PLUGIN}`] });
        const names = ((r.plugins as Msg[] | undefined) ?? []).filter((p) => !p.init_err || !p.init_err.code).map((p) => String(p.id));
        known = { names, at: Date.now() };
        return names;
      },
      async list(ctx, snapshotter) {
        const out: GraphSnapshot[] = [];
        try {
          for await (const m of snapshots.serverStream(ctx, "List", { snapshotter, filters: [] })) {
            for (const i of (m.info as Msg[] | undefined) ?? []) {
              out.push({ snapshotter, key: String(i.name), parent: String(i.parent ?? ""), labels: (i.labels as Record<string, string>) ?? {} });
            }
          }
        } catch (e) {
          known = undefined;
          throw e;
        }
        return out;
      },
      async remove(ctx, snapshotter, key, pass) {
        await snapshots.unary(withHeaders(ctx, sweepHeaders(pass)), "Remove", { snapshotter, key });
      },
    },
    roots: {
      async containers(ctx) {
        try {
          const r = await containers.unary(ctx, "List", { filters: [] });
          return ((r.containers as Msg[] | undefined) ?? []).map((c) => ({
            snapshotter: String(c.snapshotter ?? ""),
            snapshotKey: String(c.snapshot_key ?? ""),
            labels: (c.labels as Record<string, string>) ?? {},
          }));
        } catch (e) {
          if (isNotImplemented(e)) return []; // a process without the containers API holds no containers
          throw e;
        }
      },
      async sandboxes(ctx) {
        try {
          const r = await sandboxes.unary(ctx, "List", { filters: [] });
          return ((r.list as Msg[] | undefined) ?? []).map((s) => (s.labels as Record<string, string>) ?? {});
        } catch (e) {
          if (isNotImplemented(e)) return [];
          throw e;
        }
      },
    },
  };
}
