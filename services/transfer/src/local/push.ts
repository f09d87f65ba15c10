/**
 * Push (ImageStore -> OCIRegistry): walk the image from the content store, children before parents;
 * a blob or manifest the registry already has is skipped (HEAD), layers upload at most
 * `maxConcurrentUploads` at a time, manifests go by digest and the root by the reference's tag.
 */
import { Readable } from "node:stream";
import type { CallContext } from "#libs/context";
import type { ImageStoreSpec, OCIRegistrySpec, ProgressFn } from "#libs/core/transfer";
import { ProgressEvents } from "#libs/core/transfer";
import { errInvalidArgument } from "#libs/errdefs";
import { isIndexType, isManifestType, Labels, parseIndex, parseManifest, platformMatcher, refKey, type OciDescriptor } from "#libs/oci";
import { objectOf } from "#libs/registry";
import { registryClient, settleAll, toNative, type TransferDeps } from "./deps";
import { ProgressTracker } from "./progress";
import { blobChunks, readBlob } from "./util";

/** Repositories of `domain`'s host that hold `digest`, from its distribution source label (for cross-repository mounts). */
async function mountSources(deps: TransferDeps, ctx: CallContext, digest: string, domain: string): Promise<string[]> {
  try {
    const host = new URL(`dummy://${domain}`).hostname.replace(/^\[|\]$/g, "");
    const v = (await deps.content.info(ctx, digest)).labels[`${Labels.distributionSourcePrefix}${host}`];
    return v ? v.split(",").filter(Boolean) : [];
  } catch {
    return [];
  }
}

export async function push(deps: TransferDeps, ctx: CallContext, src: ImageStoreSpec, dst: OCIRegistrySpec, progressFn?: ProgressFn): Promise<void> {
  if (!src.name) throw errInvalidArgument("image name must not be empty");
  const label = `OCIRegistry(${dst.reference})`;
  const img = await deps.images.get(ctx, src.name);
  const client = registryClient(deps, dst.reference, dst.resolver);
  const rootTag = objectOf(client.ref);
  if (client.ref.digest && client.ref.digest !== img.target.digest) throw errInvalidArgument(`reference digest ${client.ref.digest} is not the image's ${img.target.digest}`);
  progressFn?.({ event: ProgressEvents.pushingTo(label) });
  const tracker = new ProgressTracker(progressFn, src.name, ProgressEvents.pushing);
  const limiter = deps.uploads;
  const matcher = src.platforms.length ? platformMatcher(src.platforms) : undefined;
  const started = new Map<string, Promise<void>>();
  const ac = new AbortController();
  const onAbort = (): void => ac.abort(ctx.signal.reason);
  ctx.signal.addEventListener("abort", onAbort, { once: true });

  const once = (d: OciDescriptor, parents: string[], root: boolean): Promise<void> => {
    let p = started.get(d.digest);
    if (!p) started.set(d.digest, (p = node(d, parents, root)));
    return p;
  };

  const node = async (d: OciDescriptor, parents: string[], root: boolean): Promise<void> => {
    let bytes: Buffer | undefined;
    if (isIndexType(d.mediaType) || isManifestType(d.mediaType)) {
      bytes = await readBlob(deps.content, ctx, d.digest);
      const kids = isIndexType(d.mediaType)
        ? parseIndex(bytes).manifests.filter((k) => !matcher || matcher(k.platform))
        : (() => {
          const m = parseManifest(bytes);
          return [m.config, ...m.layers];
        })();
      await settleAll(kids.map((k) => once(k, [refKey(d)], false)), ac);
    }
    tracker.add(d, parents);
    try {
      if (!root && (await client.exists(d, ac.signal))) {
        tracker.exists(d);
        return;
      }
      if (bytes) {
        await client.pushManifest(d, bytes, root ? rootTag : d.digest, ac.signal);
      } else {
        const from = await mountSources(deps, ctx, d.digest, client.ref.domain);
        await limiter.run(() => client.pushBlob(d, () => {
          let sent = 0;
          tracker.bytes(d, 0, true);
          return Readable.from((async function* () {
            for await (const c of blobChunks(deps.content, ctx, d.digest)) {
              sent += c.length;
              tracker.bytes(d, sent);
              yield c;
            }
          })());
        }, ac.signal, from));
      }
    } catch (e) {
      throw toNative(e, `failed to push ${refKey(d)}`);
    }
    tracker.complete(d, ProgressEvents.pushed);
  };

  try {
    await settleAll([once(img.target, [], true)], ac);
    progressFn?.({ event: ProgressEvents.completedPush(label) });
  } finally {
    ctx.signal.removeEventListener("abort", onAbort);
  }
}
