/** NamespaceStore over gRPC: callers cannot tell it from the local store. */
import { isAlreadyExists } from "../errdefs";
import { withNamespace, type CallContext } from "../context";
import { RpcClient, type Channel } from "../grpc/client";
import { NAMESPACE_EVENTS, type Namespace, type NamespaceStore } from "../core/namespaces";
import type { EventSubscriber } from "../events";
import { unpackAny } from "../proto";

export const NAMESPACES_SERVICE = "containerd.services.namespaces.v1.Namespaces";

const fromProto = (n: { name?: string; labels?: Record<string, string> } | null | undefined): Namespace => ({ name: n?.name ?? "", labels: n?.labels ?? {} });

export class NamespaceStoreProxy implements NamespaceStore {
  private readonly rpc: RpcClient<typeof NAMESPACES_SERVICE>;
  constructor(channel: Channel) {
    this.rpc = new RpcClient(channel, NAMESPACES_SERVICE);
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
 * calls this before its first write in a namespace. Known namespaces are cached for a while; a
 * /namespaces/delete event (when an event subscriber is given) drops one from the cache at once.
 */
export class NamespaceEnsurer {
  private readonly known = new Map<string, number>();
  private readonly unsubscribe?: () => void;

  constructor(
    private readonly store: NamespaceStore,
    events?: EventSubscriber,
    private readonly ttlMs = 30_000,
  ) {
    // Only deletions matter here: subscribing to them alone keeps NATS from waking us for every event.
    this.unsubscribe = events?.subscribe((env) => {
      if (env.topic !== NAMESPACE_EVENTS.delete.topic) return;
      try {
        const { name } = unpackAny<{ name: string }>(env.event);
        this.forget(name);
      } catch {
        /* not ours to decode */
      }
    }, { topics: [NAMESPACE_EVENTS.delete.topic] });
  }

  async ensure(ctx: CallContext, ns: string): Promise<void> {
    const seen = this.known.get(ns);
    if (seen !== undefined && Date.now() - seen < this.ttlMs) return;
    try {
      await this.store.create(withNamespace(ctx, ns), { name: ns, labels: {} });
    } catch (e) {
      if (!isAlreadyExists(e)) throw e;
    }
    this.known.set(ns, Date.now());
  }

  /** Forget a namespace (after it was deleted), so the next write creates it again. */
  forget(ns: string): void {
    this.known.delete(ns);
  }

  close(): void {
    this.unsubscribe?.();
  }
}
