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
import type { Sandbox } from "../core/sandbox";
import type { Input } from "../proto/types";

export const CONTAINERS_SERVICE = "containerd.services.containers.v1.Containers";

export function anyToProto(a: TypedValue): Input["google.protobuf.Any"];
export function anyToProto(a: TypedValue | undefined): Input["google.protobuf.Any"] | null;
export function anyToProto(a: TypedValue | undefined): Input["google.protobuf.Any"] | null {
  return a ? { type_url: a.typeUrl, value: Buffer.from(a.value) } : null;
}

export function anyFromProto(m: Msg | null | undefined): TypedValue | undefined {
  if (!m || (!m.type_url && !(m.value as Uint8Array | undefined)?.length)) return undefined;
  return { typeUrl: String(m.type_url ?? ""), value: Buffer.from((m.value as Uint8Array | undefined) ?? []) };
}

/** A timestamp, or null for an unset date (the zero time). */
export const tsOrNull = (d: Date | undefined): Input["google.protobuf.Timestamp"] | null => (d && d.getTime() > 0 ? toTimestamp(d) : null);

/** What container and sandbox records have alike: the same fields under the same names on the wire. */
export type RecordFields = Pick<Container & Sandbox, "runtime" | "spec" | "labels" | "extensions" | "createdAt" | "updatedAt">;

export function recordFieldsToProto(r: Partial<RecordFields>): Msg {
  return {
    runtime: { name: r.runtime?.name ?? "", options: anyToProto(r.runtime?.options) },
    spec: anyToProto(r.spec),
    labels: { ...(r.labels ?? {}) },
    created_at: tsOrNull(r.createdAt),
    updated_at: tsOrNull(r.updatedAt),
    extensions: Object.fromEntries(Object.entries(r.extensions ?? {}).map(([k, v]) => [k, anyToProto(v)])),
  };
}

/**
 * The shared fields of a container or sandbox message (unset times read as the zero time). An extension
 * with neither type nor bytes is kept as an empty value with `keepEmptyExtensions` (containers store
 * extensions as given), else dropped (sandboxes).
 */
export function recordFieldsFromProto(m: Msg | null | undefined, keepEmptyExtensions: boolean): RecordFields {
  const options = anyFromProto(m?.runtime?.options);
  const spec = anyFromProto(m?.spec);
  const extensions: Record<string, TypedValue> = {};
  for (const [k, v] of Object.entries((m?.extensions as Record<string, Msg> | undefined) ?? {})) {
    const a = anyFromProto(v) ?? (keepEmptyExtensions ? { typeUrl: "", value: new Uint8Array() } : undefined);
    if (a) extensions[k] = a;
  }
  return {
    runtime: { name: String(m?.runtime?.name ?? ""), ...(options ? { options } : {}) },
    ...(spec ? { spec } : {}),
    labels: { ...((m?.labels as Record<string, string> | undefined) ?? {}) },
    extensions,
    createdAt: fromTimestamp(m?.created_at) ?? new Date(0),
    updatedAt: fromTimestamp(m?.updated_at) ?? new Date(0),
  };
}

export function containerToProto(c: ContainerInput & { createdAt?: Date; updatedAt?: Date }): Input["containerd.services.containers.v1.Container"] {
  return {
    id: c.id,
    ...recordFieldsToProto(c),
    image: c.image ?? "",
    snapshotter: c.snapshotter ?? "",
    snapshot_key: c.snapshotKey ?? "",
    sandbox: c.sandbox ?? "",
  };
}

/** A request's container (times from the client are ignored: the store stamps them). */
export function containerInputFromProto(m: Msg | null | undefined): ContainerInput {
  const { createdAt: _created, updatedAt: _updated, ...c } = containerFromProto(m);
  return c;
}

export function containerFromProto(m: Msg | null | undefined): Container {
  return {
    id: String(m?.id ?? ""),
    ...recordFieldsFromProto(m, true),
    image: String(m?.image ?? ""),
    snapshotter: String(m?.snapshotter ?? ""),
    snapshotKey: String(m?.snapshot_key ?? ""),
    sandbox: String(m?.sandbox ?? ""),
  };
}

export class ContainerStoreProxy implements ContainerStore {
  private readonly rpc: RpcClient<typeof CONTAINERS_SERVICE>;

  constructor(channel: Channel) {
    this.rpc = new RpcClient(channel, CONTAINERS_SERVICE);
  }

  /** Resolve once the owning process answers (a connection is up), or reject after `ms`. */
  waitForReady(ms: number): Promise<void> {
    return this.rpc.waitForReady(ms);
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
