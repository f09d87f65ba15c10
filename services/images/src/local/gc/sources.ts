/**
 * Where the collector reads objects from and deletes garbage in: the processes that own the data,
 * through their clients in libs/clients (content List, ListStatuses, Delete, Abort; snapshots List,
 * Remove; containers List; sandbox Store List; introspection Plugins for the loaded snapshotters).
 * Every call runs in the namespace of its context. The sweep's deletes carry GC_SWEEP_HEADER.
 */
import { withHeaders, type CallContext } from "#libs/context";
import { isNotImplemented } from "#libs/errdefs";
import { ContainerStoreProxy } from "#libs/clients/containers";
import { ContentStoreProxy } from "#libs/clients/content";
import { IntrospectionProxy } from "#libs/clients/introspection";
import { SandboxStoreProxy } from "#libs/clients/sandbox";
import { SnapshotterSetProxy } from "#libs/clients/snapshots";
import type { ChannelPool } from "#libs/grpc/client";
import { GC_SWEEP_HEADER, type GraphSnapshot } from "#libs/core/gc";

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
/** How long the list of loaded snapshotters is reused before the snapshots process is asked again. */
const SNAPSHOTTERS_TTL_MS = 5000;

/**
 * The snapshotters the snapshots process at `address` has loaded (its introspection plugins of type
 * io.containerd.snapshotter.v1 that initialised). They rarely change: the answer is reused for a few
 * seconds, and `forget` drops it (a snapshots process that went down meanwhile).
 */
export function loadedSnapshotters(address: string, channels: ChannelPool): { names(ctx: CallContext): Promise<string[]>; forget(): void } {
  const introspection = new IntrospectionProxy(channels.get(address));
  let known: { names: string[]; at: number } | undefined;
  return {
    async names(ctx) {
      if (known && Date.now() - known.at < SNAPSHOTTERS_TTL_MS) return known.names;
      const names = (await introspection.plugins(ctx, [`type==${SNAPSHOTTER_PLUGIN}`])).filter((p) => !p.initErr).map((p) => p.id);
      known = { names, at: Date.now() };
      return names;
    },
    forget() {
      known = undefined;
    },
  };
}

/** The sources over the other processes' gRPC services. */
export function remoteSources(a: RemoteAddresses, channels: ChannelPool, snapshotters = loadedSnapshotters(a.snapshots, channels)): Required<GCSources> {
  const content = new ContentStoreProxy(channels.get(a.content));
  const snapshots = new SnapshotterSetProxy(channels.get(a.snapshots));
  const containers = new ContainerStoreProxy(channels.get(a.tasks));
  const sandboxes = new SandboxStoreProxy(channels.get(a.sandbox));
  const all = { content, snapshots, tasks: containers, sandbox: sandboxes };
  return {
    async ready(ms) {
      const late = await Promise.all(Object.entries(all).map(([name, c]) => c.waitForReady(ms).then(() => undefined, () => name)));
      return late.filter((n): n is string => n !== undefined);
    },
    content: {
      async list(ctx) {
        const out: ContentObject[] = [];
        await content.walk(ctx, (i) => void out.push({ digest: i.digest, labels: i.labels }));
        return out;
      },
      async ingests(ctx) {
        return (await content.listStatuses(ctx)).map((s) => ({ ref: s.ref, expected: s.expected, updatedAt: s.updatedAt }));
      },
      async delete(ctx, digest, pass) {
        await content.delete(withHeaders(ctx, sweepHeaders(pass)), digest);
      },
      async abort(ctx, ref, pass) {
        await content.abort(withHeaders(ctx, sweepHeaders(pass)), ref);
      },
    },
    snapshots: {
      snapshotters: (ctx) => snapshotters.names(ctx),
      async list(ctx, snapshotter) {
        const out: GraphSnapshot[] = [];
        try {
          await snapshots.get(snapshotter).walk(ctx, (i) => void out.push({ snapshotter, key: i.name, parent: i.parent, labels: i.labels }));
        } catch (e) {
          snapshotters.forget();
          throw e;
        }
        return out;
      },
      async remove(ctx, snapshotter, key, pass) {
        await snapshots.get(snapshotter).remove(withHeaders(ctx, sweepHeaders(pass)), key);
      },
    },
    roots: {
      async containers(ctx) {
        try {
          return (await containers.list(ctx)).map((c) => ({ snapshotter: c.snapshotter, snapshotKey: c.snapshotKey, labels: c.labels }));
        } catch (e) {
          if (isNotImplemented(e)) return []; // a process without the containers API holds no containers
          throw e;
        }
      },
      async sandboxes(ctx) {
        try {
          return (await sandboxes.list(ctx)).map((s) => s.labels);
        } catch (e) {
          if (isNotImplemented(e)) return [];
          throw e;
        }
      },
    },
  };
}
