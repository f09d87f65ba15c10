/** Image records for a transfer destination (ImageStore): the name, extra references, create-or-replace. */
import type { CallContext } from "#libs/context";
import type { Descriptor } from "#libs/core/images";
import type { ImageStoreSpec } from "#libs/core/transfer";
import { isAlreadyExists } from "#libs/errdefs";
import type { OciDescriptor } from "#libs/oci";
import type { TransferDeps } from "./deps";

export function targetOf(d: OciDescriptor): Descriptor {
  return { mediaType: d.mediaType, digest: d.digest, size: d.size, annotations: { ...(d.annotations ?? {}) } };
}

/** Create the image, or replace it (Update without a mask) when the name exists, as ctr's pull does. */
export async function putImage(deps: TransferDeps, ctx: CallContext, name: string, target: Descriptor, labels: Record<string, string>): Promise<void> {
  try {
    await deps.images.create(ctx, { name, labels, target });
  } catch (e) {
    if (!isAlreadyExists(e)) throw e;
    await deps.images.update(ctx, { name, labels, target });
  }
}

/** The names a destination asks for: `name` (else `fallback`), non-prefix extra references, `@digest` variants. */
export function imageNames(dst: ImageStoreSpec, desc: OciDescriptor, fallback: string): string[] {
  const names: string[] = [];
  const add = (n: string): void => {
    if (n && !names.includes(n)) names.push(n);
  };
  add(dst.name || (dst.extraReferences.length ? "" : fallback));
  for (const r of dst.extraReferences) {
    if (r.isPrefix) continue;
    if (!(r.skipNamedDigest && r.name.includes("@"))) add(r.name);
    if (r.addDigest) add(`${repositoryOf(r.name)}@${desc.digest}`);
  }
  return names;
}

/** A reference without its tag and digest. */
export function repositoryOf(ref: string): string {
  const noDigest = ref.split("@")[0]!;
  const slash = noDigest.lastIndexOf("/");
  const colon = noDigest.lastIndexOf(":");
  return colon > slash ? noDigest.slice(0, colon) : noDigest;
}

export async function storeImages(deps: TransferDeps, ctx: CallContext, dst: ImageStoreSpec, desc: OciDescriptor, fallback: string): Promise<string[]> {
  const names = imageNames(dst, desc, fallback);
  for (const n of names) await putImage(deps, ctx, n, targetOf(desc), dst.labels);
  return names;
}
