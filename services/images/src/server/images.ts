/** gRPC adapter for containerd.services.images.v1.Images: validate, call the store, convert. */
import { serviceHandlers, type Msg, type ServiceHandlers } from "../../../../libs/grpc/server";
import type { MetaDB } from "../local/db";
import { readImage } from "../local/images";
import { errInvalidArgument } from "../../../../libs/errdefs";
import { toTimestamp } from "../../../../libs/proto";
import { descriptorFromProto, descriptorToProto, IMAGES_SERVICE } from "../../../../libs/clients/images";
import type { Image, ImageInput, ImageStore } from "../../../../libs/core/images";
import type { Input } from "../../../../libs/proto/types";

export { IMAGES_SERVICE };

export const imageToProto = (i: Image): Input["containerd.services.images.v1.Image"] => ({
  name: i.name,
  labels: i.labels,
  target: descriptorToProto(i.target),
  created_at: toTimestamp(i.createdAt),
  updated_at: toTimestamp(i.updatedAt),
});

/** The image of a Create/Update request; times the client sends (Go's zero time) are ignored. */
function imageFromProto(m: { name?: string; labels?: Record<string, string>; target?: Record<string, unknown> | null } | null | undefined): ImageInput {
  if (!m || !m.name) throw errInvalidArgument("Image.Name required");
  return { name: m.name, labels: m.labels ?? {}, target: descriptorFromProto(m.target) };
}

/** Get answered from a read-only view of the images database (the gateway's): the image when stored, else undefined. */
export function imageFromView(db: MetaDB, ns: string, req: Msg): Msg | undefined {
  const img = readImage(db, ns, String(req.name ?? ""));
  return img && { image: imageToProto(img) };
}

export function imagesHandlers(store: ImageStore): ServiceHandlers<typeof IMAGES_SERVICE> {
  return serviceHandlers(IMAGES_SERVICE, {
    Get: async (ctx, req) => ({ image: imageToProto(await store.get(ctx, req.name)) }),
    List: async (ctx, req) => ({ images: (await store.list(ctx, req.filters ?? [])).map(imageToProto) }),
    Create: async (ctx, req) => ({ image: imageToProto(await store.create(ctx, imageFromProto(req.image))) }),
    Update: async (ctx, req) => ({ image: imageToProto(await store.update(ctx, imageFromProto(req.image), req.update_mask?.paths ?? [])) }),
    Delete: async (ctx, req) => {
      await store.delete(ctx, req.name, { sync: !!req.sync, ...(req.target ? { target: descriptorFromProto(req.target) } : {}) });
      return {};
    },
  });
}
