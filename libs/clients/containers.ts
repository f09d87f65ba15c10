/**
 * ContainerStore over gRPC (containerd.services.containers.v1.Containers), so callers cannot tell it
 * from the local store, plus the proto conversions the tasks process's gRPC adapter uses. Any fields
 * travel as they are (type URL and bytes untouched).
 */
import type { CallContext } from "../context";
import { RpcClient, type Channel } from "../grpc/client";
import type { Msg } from "../grpc/server";
import { fromTimestamp, toTimestamp } from "../proto";
import type { Container, ContainerInput, ContainerStore, TypedValue } from "../core/containers";

export const CONTAINERS_SERVICE = "containerd.services.containers.v1.Containers";

export function anyToProto(a: TypedValue | undefined): Msg | null {
  return a ? { type_url: a.typeUrl, value: Buffer.from(a.value) } : null;
}

export function anyFromProto(m: Msg | null | undefined): TypedValue | undefined {
  if (!m || (!m.type_url && !(m.value as Uint8Array | undefined)?.length)) return undefined;
  return { typeUrl: String(m.type_url ?? ""), value: Buffer.from((m.value as Uint8Array | undefined) ?? []) };
}

/** A timestamp, or null for an unset date (the zero time). */
export const tsOrNull = (d: Date | undefined): Msg | null => (d && d.getTime() > 0 ? toTimestamp(d) : null);

export function containerToProto(c: ContainerInput & { createdAt?: Date; updatedAt?: Date }): Msg {
  return {
    id: c.id,
    labels: { ...(c.labels ?? {}) },
    image: c.image ?? "",
    runtime: { name: c.runtime?.name ?? "", options: anyToProto(c.runtime?.options) },
    spec: anyToProto(c.spec),
    snapshotter: c.snapshotter ?? "",
    snapshot_key: c.snapshotKey ?? "",
    created_at: tsOrNull(c.createdAt),
    updated_at: tsOrNull(c.updatedAt),
    extensions: Object.fromEntries(Object.entries(c.extensions ?? {}).map(([k, v]) => [k, anyToProto(v)])),
    sandbox: c.sandbox ?? "",
  };
}

/** A request's container (times from the client are ignored: the store stamps them). */
export function containerInputFromProto(m: Msg | null | undefined): ContainerInput {
  const options = anyFromProto(m?.runtime?.options);
  const spec = anyFromProto(m?.spec);
  const ext: Record<string, TypedValue> = {};
  for (const [k, v] of Object.entries((m?.extensions as Record<string, Msg> | undefined) ?? {})) {
    ext[k] = anyFromProto(v) ?? { typeUrl: "", value: new Uint8Array() };
  }
  return {
    id: String(m?.id ?? ""),
    labels: { ...((m?.labels as Record<string, string> | undefined) ?? {}) },
    image: String(m?.image ?? ""),
    runtime: { name: String(m?.runtime?.name ?? ""), ...(options ? { options } : {}) },
    ...(spec ? { spec } : {}),
    snapshotter: String(m?.snapshotter ?? ""),
    snapshotKey: String(m?.snapshot_key ?? ""),
    extensions: ext,
    sandbox: String(m?.sandbox ?? ""),
  };
}

export function containerFromProto(m: Msg | null | undefined): Container {
  const i = containerInputFromProto(m);
  return {
    ...i,
    labels: i.labels ?? {},
    extensions: i.extensions ?? {},
    image: i.image ?? "",
    snapshotter: i.snapshotter ?? "",
    snapshotKey: i.snapshotKey ?? "",
    sandbox: i.sandbox ?? "",
    createdAt: fromTimestamp(m?.created_at) ?? new Date(0),
    updatedAt: fromTimestamp(m?.updated_at) ?? new Date(0),
  };
}

export class ContainerStoreProxy implements ContainerStore {
  private readonly rpc: RpcClient;

  constructor(channel: Channel) {
    this.rpc = new RpcClient(channel, CONTAINERS_SERVICE);
  }

  async create(ctx: CallContext, c: ContainerInput): Promise<Container> {
    return containerFromProto((await this.rpc.unary(ctx, "Create", { container: containerToProto(c) })).container);
  }

  async update(ctx: CallContext, c: ContainerInput, fields?: readonly string[]): Promise<Container> {
    const req = { container: containerToProto(c), update_mask: fields?.length ? { paths: [...fields] } : null };
    return containerFromProto((await this.rpc.unary(ctx, "Update", req)).container);
  }

  async get(ctx: CallContext, id: string): Promise<Container> {
    return containerFromProto((await this.rpc.unary(ctx, "Get", { id })).container);
  }

  async list(ctx: CallContext, filters: readonly string[] = []): Promise<Container[]> {
    const out: Container[] = [];
    for await (const m of this.rpc.serverStream(ctx, "ListStream", { filters: [...filters] })) out.push(containerFromProto(m.container));
    return out;
  }

  async delete(ctx: CallContext, id: string): Promise<void> {
    await this.rpc.unary(ctx, "Delete", { id });
  }
}
