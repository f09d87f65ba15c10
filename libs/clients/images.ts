/**
 * ImageStore over gRPC (containerd.services.images.v1.Images): callers cannot tell it from the local
 * store. Errors arrive as native errdefs classes (the RpcClient maps them).
 */
import type { CallContext } from "../context";
import { RpcClient, type Channel } from "../grpc/client";
import type { Msg } from "../grpc/server";
import { fromTimestamp } from "../proto";
import type { Descriptor, Image, ImageDeleteOptions, ImageInput, ImageStore } from "../core/images";
import type { Input } from "../proto/types";

export const IMAGES_SERVICE = "containerd.services.images.v1.Images";

export function descriptorToProto(d: Descriptor): Input["containerd.types.Descriptor"] {
  return { media_type: d.mediaType, digest: d.digest, size: d.size, annotations: d.annotations ?? {} };
}

export function descriptorFromProto(m: Msg | null | undefined): Descriptor {
  return {
    mediaType: String(m?.media_type ?? ""),
    digest: String(m?.digest ?? ""),
    size: Number(m?.size ?? 0),
    annotations: (m?.annotations as Record<string, string> | undefined) ?? {},
  };
}

export function imageFromProto(m: Msg | null | undefined): Image {
  return {
    name: String(m?.name ?? ""),
    labels: (m?.labels as Record<string, string> | undefined) ?? {},
    target: descriptorFromProto(m?.target),
    createdAt: fromTimestamp(m?.created_at) ?? new Date(0),
    updatedAt: fromTimestamp(m?.updated_at) ?? new Date(0),
  };
}

const inputToProto = (i: ImageInput): Input["containerd.services.images.v1.Image"] => ({ name: i.name, labels: i.labels ?? {}, target: descriptorToProto(i.target) });

export class ImageStoreProxy implements ImageStore {
  private readonly rpc: RpcClient<typeof IMAGES_SERVICE>;

  constructor(channel: Channel) {
    this.rpc = new RpcClient(channel, IMAGES_SERVICE);
  }

  async get(ctx: CallContext, name: string): Promise<Image> {
    return imageFromProto((await this.rpc.unary(ctx, "Get", { name })).image);
  }

  async list(ctx: CallContext, filters: readonly string[] = []): Promise<Image[]> {
    return (((await this.rpc.unary(ctx, "List", { filters: [...filters] })).images as Msg[] | undefined) ?? []).map(imageFromProto);
  }

  async create(ctx: CallContext, image: ImageInput): Promise<Image> {
    return imageFromProto((await this.rpc.unary(ctx, "Create", { image: inputToProto(image) })).image);
  }

  async update(ctx: CallContext, image: ImageInput, paths: readonly string[] = []): Promise<Image> {
    const req = { image: inputToProto(image), update_mask: paths.length ? { paths: [...paths] } : null };
    return imageFromProto((await this.rpc.unary(ctx, "Update", req)).image);
  }

  async delete(ctx: CallContext, name: string, opts: ImageDeleteOptions = {}): Promise<void> {
    await this.rpc.unary(ctx, "Delete", { name, sync: !!opts.sync, ...(opts.target ? { target: descriptorToProto(opts.target) } : {}) });
  }
}
