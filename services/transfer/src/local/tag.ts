/** Tag (ImageStore -> ImageStore): the source image's target stored under the destination's names. */
import type { CallContext } from "#libs/context";
import type { ImageStoreSpec, ProgressFn } from "#libs/core/transfer";
import { errInvalidArgument } from "#libs/errdefs";
import type { TransferDeps } from "./deps";
import { imageNames, putImage } from "./images";

export async function tag(deps: TransferDeps, ctx: CallContext, src: ImageStoreSpec, dst: ImageStoreSpec, progress?: ProgressFn): Promise<void> {
  if (!src.name) throw errInvalidArgument("source image name must not be empty");
  const img = await deps.images.get(ctx, src.name);
  const names = imageNames(dst, { ...img.target }, "");
  if (!names.length) throw errInvalidArgument("destination image name must not be empty");
  const labels = Object.keys(dst.labels).length ? dst.labels : img.labels;
  for (const n of names) {
    await putImage(deps, ctx, n, img.target, labels);
    progress?.({ event: "saved", name: n, desc: img.target });
  }
}
