/**
 * Pull (OCIRegistry -> ImageStore), producing what `ctr images pull` produces:
 * - every blob written through the content service under the transfer's lease, with ref
 *   `<kind>-<digest>`, at most `maxConcurrentDownloads` at a time, index/manifest first;
 * - after an index or manifest is stored, its children's `containerd.io/gc.ref.content.*` labels
 *   (every manifest of an index, also other platforms), and on every blob
 *   `containerd.io/distribution.source.<host>` = repository (merged with existing values);
 * - unpack per requested platform and snapshotter, layer by layer as soon as each is fetched and its
 *   parent is unpacked;
 * - then the image record (Create, or Update on AlreadyExists) for the name and extra references.
 */
import type { CallContext } from "../../../../libs/context";
import { errNotFound } from "../../../../libs/errdefs";
import type { ImageStoreSpec, OCIRegistrySpec, Platform, ProgressFn } from "../../../../libs/core/transfer";
import { ProgressEvents } from "../../../../libs/core/transfer";
import {
  childrenLabels, isIndexType, isLayerType, isManifestType, Labels, normalizePlatform, parseConfig, parseIndex, parseManifest, platformMatcher, platformRank, refKey,
  type OciDescriptor,
} from "../../../../libs/oci";
import type { RegistryClient } from "../../../../libs/registry";
import { registryClient, settleAll, toNative, type TransferDeps } from "./deps";
import type { FetchResult } from "./fetch";
import { storeImages } from "./images";
import { ProgressTracker } from "./progress";
import { resolveSnapshotter, unpackLayers } from "./unpack";
import { readBlob } from "./util";

interface UnpackTarget {
  platform: Platform;
  snapshotter: string;
  matched: boolean;
}

/** Set `labels` (all keys via `labels.<k>` paths) on a blob. */
export async function setLabels(deps: TransferDeps, ctx: CallContext, digest: string, labels: Record<string, string>): Promise<void> {
  const keys = Object.keys(labels);
  if (!keys.length) return;
  await deps.content.update(ctx, { digest, labels }, keys.map((k) => `labels.${k}`));
}

/** containerd's AppendDistributionSourceLabel: key by host (port stripped), value the repository, comma-merged. */
export async function appendSourceLabel(deps: TransferDeps, ctx: CallContext, digest: string, client: RegistryClient): Promise<void> {
  const host = new URL(`dummy://${client.ref.domain}`).hostname.replace(/^\[|\]$/g, "");
  const key = `${Labels.distributionSourcePrefix}${host}`;
  const repo = client.ref.path;
  const info = await deps.content.info(ctx, digest);
  const existing = info.labels[key];
  if (existing && existing.split(",").includes(repo)) return;
  const value = existing ? [...existing.split(","), repo].sort().join(",") : repo;
  await setLabels(deps, ctx, digest, { [key]: value });
}

export async function pull(deps: TransferDeps, ctx: CallContext, src: OCIRegistrySpec, dst: ImageStoreSpec, progressFn?: ProgressFn): Promise<void> {
  const emit = (event: string, extra: Record<string, unknown> = {}): void => {
    try {
      progressFn?.({ event, ...extra });
    } catch {
      /* ignore */
    }
  };
  const label = `OCIRegistry(${src.reference})`;
  const client = registryClient(deps, src.reference, src.resolver);
  const ac = new AbortController();
  const onAbort = (): void => ac.abort(ctx.signal.reason);
  ctx.signal.addEventListener("abort", onAbort, { once: true });
  try {
    emit(ProgressEvents.resolving(label));
    let resolved: { name: string; desc: OciDescriptor };
    try {
      resolved = await client.resolve(ac.signal);
    } catch (e) {
      throw toNative(e, `failed to resolve reference "${src.reference}"`);
    }
    const { name, desc } = resolved;
    emit(ProgressEvents.pulling(label));
    emit(ProgressEvents.fetching, { name });

    const tracker = new ProgressTracker(progressFn, name);
    const limiter = deps.downloads;
    const matcher = dst.platforms.length ? platformMatcher(dst.platforms) : undefined;
    const targets: UnpackTarget[] = [];
    for (const u of dst.unpacks) {
      const snapshotter = await resolveSnapshotter(deps, ctx, u.snapshotter);
      const platform = normalizePlatform(u.platform.os ? u.platform : { ...u.platform, os: "linux" });
      if (!targets.some((t) => t.snapshotter === snapshotter && JSON.stringify(t.platform) === JSON.stringify(platform))) targets.push({ platform, snapshotter, matched: false });
    }

    const fetchOne = async (d: OciDescriptor, parents: string[]): Promise<void> => {
      const ref = tracker.add(d, parents);
      const go = (): Promise<FetchResult> => {
        ac.signal.throwIfAborted();
        return deps.fetcher.fetch(ctx, client, d, { ref, onBytes: (off) => tracker.bytes(d, off), signal: ac.signal });
      };
      // Only layers count against the download limit: manifests and configs are small and gate the unpack.
      const r = await (isLayerType(d.mediaType) ? limiter.run(go) : go()).catch((e: unknown) => {
        throw toNative(e, `failed to fetch ${refKey(d)}`);
      });
      if (r === "exists") tracker.exists(d);
      else tracker.complete(d);
    };

    /** `metadataOnly`: a manifest of another platform kept with all_metadata (manifest and config, no layers). */
    const handle = async (d: OciDescriptor, parents: string[], unpackFor: UnpackTarget[], metadataOnly = false): Promise<void> => {
      await fetchOne(d, parents);
      const me = [refKey(d)];
      if (isIndexType(d.mediaType)) {
        const idx = parseIndex(await readBlob(deps.content, ctx, d.digest));
        await setLabels(deps, ctx, d.digest, childrenLabels(idx.manifests));
        await appendSourceLabel(deps, ctx, d.digest, client);
        let kids = idx.manifests;
        const others = matcher && dst.allMetadata ? kids.filter((k) => !matcher(k.platform)) : [];
        if (matcher) kids = kids.filter((k) => matcher(k.platform));
        if (dst.manifestLimit > 0) {
          const want = dst.platforms.length ? dst.platforms : targets.map((t) => t.platform);
          kids = [...kids].sort((a, b) => platformRank(want, a.platform) - platformRank(want, b.platform)).slice(0, dst.manifestLimit);
        }
        const assigned = new Map<OciDescriptor, UnpackTarget[]>();
        const nested: UnpackTarget[] = [];
        for (const t of unpackFor) {
          const best = kids
            .filter((k) => isManifestType(k.mediaType) && k.platform && platformMatcher([t.platform])(k.platform))
            .sort((a, b) => platformRank([t.platform], a.platform) - platformRank([t.platform], b.platform))[0];
          if (best) {
            assigned.set(best, [...(assigned.get(best) ?? []), t]);
            t.matched = true;
          } else {
            nested.push(t);
          }
        }
        await settleAll([
          ...kids.map((k) => handle(k, me, assigned.get(k) ?? (isIndexType(k.mediaType) ? nested : []))),
          ...others.map((k) => handle(k, me, [], true)),
        ], ac);
        return;
      }
      if (isManifestType(d.mediaType)) {
        const m = parseManifest(await readBlob(deps.content, ctx, d.digest));
        await setLabels(deps, ctx, d.digest, childrenLabels([m.config, ...m.layers]));
        await appendSourceLabel(deps, ctx, d.digest, client);
        const configP = handle(m.config, me, []);
        if (metadataOnly) {
          await configP;
          return;
        }
        const layerPs = m.layers.map((l) => handle(l, me, []));
        const work: Promise<unknown>[] = [configP, ...layerPs];
        if (unpackFor.length) {
          work.push(configP.then(async () => {
            const config = parseConfig(await readBlob(deps.content, ctx, m.config.digest));
            for (const t of unpackFor) {
              if (config.os && config.architecture && !platformMatcher([t.platform])({ os: config.os, architecture: config.architecture, variant: config.variant })) continue;
              t.matched = true;
              await unpackLayers(deps, ctx, t.snapshotter, m.config, config, m.layers.map((l, i) => ({ desc: l, fetched: layerPs[i]! })), tracker);
            }
          }));
        }
        await settleAll(work, ac);
        return;
      }
      await appendSourceLabel(deps, ctx, d.digest, client);
    };

    await settleAll([handle(desc, [], targets)], ac);
    const missing = targets.filter((t) => !t.matched);
    if (missing.length) throw errNotFound(`no match for platform ${missing.map((t) => `${t.platform.os}/${t.platform.architecture}${t.platform.variant ? "/" + t.platform.variant : ""}`).join(", ")} in manifest ${desc.digest}`);

    const imgs = await storeImages(deps, ctx, dst, desc, name);
    for (const img of imgs) emit(ProgressEvents.saved, { name: img, desc: { mediaType: desc.mediaType, digest: desc.digest, size: desc.size } });
    emit(ProgressEvents.completedPull(label));
  } finally {
    ctx.signal.removeEventListener("abort", onAbort);
  }
}
