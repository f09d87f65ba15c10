/**
 * Asks the other processes whether a namespace still holds anything, through their clients in
 * libs/clients (addressed straight to the owning process, in that namespace).
 */
import { withNamespace, type CallContext } from "#libs/context";
import { isNotFound } from "#libs/errdefs";
import { ContainerStoreProxy } from "#libs/clients/containers";
import { ContentStoreProxy } from "#libs/clients/content";
import { SandboxStoreProxy } from "#libs/clients/sandbox";
import { SnapshotterSetProxy } from "#libs/clients/snapshots";
import type { ChannelPool } from "#libs/grpc/client";
import type { NamespaceUsage } from "./namespaces";

/** True when `walk` visits anything; the walk (and its stream) ends at the first object. */
async function walksAny(walk: (fn: () => void) => Promise<void>): Promise<boolean> {
  const found = new Error("found");
  try {
    await walk(() => {
      throw found;
    });
  } catch (e) {
    if (e === found) return true;
    throw e;
  }
  return false;
}

/**
 * `snapshotters`: the names to look in (the snapshots process's loaded snapshotters, see
 * gc/sources' loadedSnapshotters).
 */
export function remoteUsage(
  addresses: { content: string; snapshots: string; tasks: string; sandbox: string },
  snapshotters: (ctx: CallContext) => Promise<string[]>,
  channels: ChannelPool,
): NamespaceUsage[] {
  const content = new ContentStoreProxy(channels.get(addresses.content));
  const snapshots = new SnapshotterSetProxy(channels.get(addresses.snapshots));
  const containers = new ContainerStoreProxy(channels.get(addresses.tasks));
  const sandboxes = new SandboxStoreProxy(channels.get(addresses.sandbox));
  return [
    {
      name: "content service",
      inUse: async (ctx: CallContext, ns: string) => ((await walksAny((fn) => content.walk(withNamespace(ctx, ns), fn))) ? ["blobs"] : []),
    },
    {
      name: "snapshots service",
      inUse: async (ctx: CallContext, ns: string) => {
        const out: string[] = [];
        for (const s of await snapshotters(ctx)) {
          try {
            if (await walksAny((fn) => snapshots.get(s).walk(withNamespace(ctx, ns), fn))) out.push(`snapshots on ${JSON.stringify(s)} snapshotter`);
          } catch (e) {
            if (!isNotFound(e)) throw e; // a snapshotter that is not loaded holds nothing
          }
        }
        return out;
      },
    },
    {
      name: "tasks service",
      inUse: async (ctx: CallContext, ns: string) => ((await containers.list(withNamespace(ctx, ns))).length ? ["containers"] : []),
    },
    {
      name: "sandbox service",
      inUse: async (ctx: CallContext, ns: string) => ((await sandboxes.list(withNamespace(ctx, ns))).length ? ["sandboxes"] : []),
    },
  ];
}
