/** gRPC adapter for containerd.services.images.v1.Images: validate, call the store, convert. */
import { serviceHandlers, type ServiceHandlers } from "#libs/grpc/server";
import { imageToProto } from "../../public";
import { errInvalidArgument } from "#libs/errdefs";
import { descriptorFromProto, IMAGES_SERVICE } from "#libs/clients/images";
import type { ImageInput, ImageStore } from "#libs/core/images";

export { IMAGES_SERVICE };

/** The image of a Create/Update request; times the client sends (Go's zero time) are ignored. */
function imageFromProto(m: { name?: string; labels?: Record<string, string>; target?: Record<string, unknown> | null } | null | undefined): ImageInput {
  if (!m || !m.name) throw errInvalidArgument("Image.Name required");
  return { name: m.name, labels: m.labels ?? {}, target: descriptorFromProto(m.target) };
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
