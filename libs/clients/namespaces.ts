/** NamespaceStore over gRPC: callers cannot tell it from the local store. */
import { isAlreadyExists } from "../errdefs";
import { withNamespace, type CallContext } from "../context";
import { RpcClient } from "../grpc/client";
import type { Namespace, NamespaceStore } from "../core/namespaces";

export const NAMESPACES_SERVICE = "containerd.services.namespaces.v1.Namespaces";

const fromProto = (n: { name?: string; labels?: Record<string, string> } | undefined): Namespace => ({ name: n?.name ?? "", labels: n?.labels ?? {} });

export class NamespaceStoreProxy implements NamespaceStore {
  private readonly rpc: RpcClient;
  constructor(address: string) {
    this.rpc = new RpcClient(address, NAMESPACES_SERVICE);
  }
  async get(ctx: CallContext, name: string): Promise<Namespace> {
    return fromProto((await this.rpc.unary(ctx, "Get", { name })).namespace);
  }
  async list(ctx: CallContext): Promise<Namespace[]> {
    return ((await this.rpc.unary(ctx, "List", {})).namespaces ?? []).map(fromProto);
  }
  async create(ctx: CallContext, ns: Namespace): Promise<Namespace> {
    return fromProto((await this.rpc.unary(ctx, "Create", { namespace: ns })).namespace);
  }
  async update(ctx: CallContext, ns: Namespace, paths: string[]): Promise<Namespace> {
    return fromProto((await this.rpc.unary(ctx, "Update", { namespace: ns, update_mask: paths.length ? { paths } : null })).namespace);
  }
  async delete(ctx: CallContext, name: string): Promise<void> {
    await this.rpc.unary(ctx, "Delete", { name });
  }
}

/**
 * containerd creates a namespace on the first write into it. Every process that stores something
 * calls this before its first write in a namespace; known namespaces are cached.
 */
export class NamespaceEnsurer {
  private readonly known = new Set<string>();
  constructor(private readonly store: NamespaceStore) {}
  async ensure(ctx: CallContext, ns: string): Promise<void> {
    if (this.known.has(ns)) return;
    try {
      await this.store.create(withNamespace(ctx, ns), { name: ns, labels: {} });
    } catch (e) {
      if (!isAlreadyExists(e)) throw e;
    }
    this.known.add(ns);
  }
  /** Forget a namespace (after it was deleted), so the next write creates it again. */
  forget(ns: string): void {
    this.known.delete(ns);
  }
}
