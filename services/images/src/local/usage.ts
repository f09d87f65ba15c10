/**
 * Asks the other processes whether a namespace still holds anything, through their ordinary containerd
 * List RPCs (addressed straight to the owning process, in that namespace).
 */
import { withNamespace, type CallContext } from "../../../../libs/context";
import { isNotFound } from "../../../../libs/errdefs";
import { RpcClient, type ChannelPool } from "../../../../libs/grpc/client";
import type { NamespaceUsage } from "./namespaces";

async function nonEmptyStream(it: AsyncIterable<Record<string, unknown>>, field: string): Promise<boolean> {
  for await (const m of it) if (((m[field] as unknown[]) ?? []).length > 0) return true;
  return false;
}

export function remoteUsage(addresses: { content: string; snapshots: string; tasks: string; sandbox: string }, snapshotters: string[], channels: ChannelPool): NamespaceUsage[] {
  const content = new RpcClient(channels.get(addresses.content), "containerd.services.content.v1.Content");
  const snapshots = new RpcClient(channels.get(addresses.snapshots), "containerd.services.snapshots.v1.Snapshots");
  const containers = new RpcClient(channels.get(addresses.tasks), "containerd.services.containers.v1.Containers");
  const sandboxes = new RpcClient(channels.get(addresses.sandbox), "containerd.services.sandbox.v1.Store");
  return [
    {
      name: "content service",
      inUse: async (ctx: CallContext, ns: string) => ((await nonEmptyStream(content.serverStream(withNamespace(ctx, ns), "List", {}), "info")) ? ["blobs"] : []),
    },
    {
      name: "snapshots service",
      inUse: async (ctx: CallContext, ns: string) => {
        const out: string[] = [];
        for (const s of snapshotters) {
          try {
            if (await nonEmptyStream(snapshots.serverStream(withNamespace(ctx, ns), "List", { snapshotter: s }), "info")) out.push(`snapshots on ${JSON.stringify(s)} snapshotter`);
          } catch (e) {
            if (!isNotFound(e)) throw e; // a snapshotter that is not loaded holds nothing
          }
        }
        return out;
      },
    },
    {
      name: "tasks service",
      inUse: async (ctx: CallContext, ns: string) => (((await containers.unary(withNamespace(ctx, ns), "List", {})).containers ?? []).length ? ["containers"] : []),
    },
    {
      name: "sandbox service",
      inUse: async (ctx: CallContext, ns: string) => (((await sandboxes.unary(withNamespace(ctx, ns), "List", {})).list ?? []).length ? ["sandboxes"] : []),
    },
  ];
}
