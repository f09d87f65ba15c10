/**
 * Pull (OCIRegistry -> ImageStore), producing what `ctr images pull` produces:
 * - every blob written through the content service under the transfer's lease, with ref
 *   `<kind>-<digest>`, at most `maxConcurrentDownloads` at a time, index/manifest first;
 * - on an index or manifest, its children's `containerd.io/gc.ref.content.*` labels (every manifest
 *   of an index, also other platforms), and on every blob `containerd.io/distribution.source.<host>` =
 *   repository: given at commit when this pull commits the blob (indexes, manifests and configs are
 *   kept in memory as they download, so they are neither read back nor labelled in extra calls),
 *   else merged into what the blob has with Info and Update;
 * - layer downloads write in layer order when they compete (lanes.ts), so the first layers arrive first;
 * - unpack per requested platform and snapshotter, layer by layer as soon as each is committed and its
 *   parent is unpacked;
 * - then the image record (Create, or Update on AlreadyExists) for the name and extra references.
 */
import type { CallContext } from "#libs/context";
import { errNotFound } from "#libs/errdefs";
import type { ImageStoreSpec, OCIRegistrySpec, Platform, ProgressFn } from "#libs/core/transfer";
import { ProgressEvents } from "#libs/core/transfer";
import {
  childrenLabels, isIndexType, isLayerType, isManifestType, Labels, normalizePlatform, parseConfig, parseIndex, parseManifest, platformMatcher, platformRank, refKey,
  type OciDescriptor,
} from "#libs/oci";
import type { RegistryClient } from "#libs/registry";
import { registryClient, settleAll, toNative, type TransferDeps } from "./deps";
import type { FetchResult } from "./fetch";
import { storeImages } from "./images";
import { WriteLanes } from "./lanes";
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

/** Manifests, indexes and configs up to this size are kept in memory as they are fetched (read right after). */
const KEEP_BYTES = 16 << 20;

/** The distribution source label of blobs from `client`'s repository: key by host (port stripped), value the repository. */
export function sourceLabel(client: RegistryClient): Record<string, string> {
  const host = new URL(`dummy://${client.ref.domain}`).hostname.replace(/^\[|\]$/g, "");
  return { [`${Labels.distributionSourcePrefix}${host}`]: client.ref.path };
}

/** containerd's AppendDistributionSourceLabel: the source label's value comma-merged with what the blob has. */
export async function appendSourceLabel(deps: TransferDeps, ctx: CallContext, digest: string, client: RegistryClient): Promise<void> {
  const [[key, repo]] = Object.entries(sourceLabel(client)) as [[string, string]];
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

    const source = sourceLabel(client);
    const lanes = new WriteLanes();
    let ranks = 0;
    /**
     * Fetch `d` (committed with its distribution source label, and with its children's gc labels
     * when `children` reads them from the kept bytes); resolves once it is in the content store.
     */
    const fetchOne = async (d: OciDescriptor, parents: string[], children?: (data: Buffer) => OciDescriptor[], onVerified?: (data: Buffer) => void): Promise<FetchResult> => {
      const ref = tracker.add(d, parents);
      const labels = (data: Buffer | undefined): Record<string, string> => {
        if (!data || !children) return { ...source };
        try {
          return { ...childrenLabels(children(data)), ...source };
        } catch {
          return { ...source }; // unreadable: the caller's own parse fails the pull
        }
      };
      const layer = isLayerType(d.mediaType);
      // Layers in the order they were asked for, which is the unpack's order.
      const lane = layer ? lanes.lane(ranks++) : undefined;
      const go = async (): Promise<FetchResult> => {
        try {
          ac.signal.throwIfAborted();
          return await deps.fetcher.fetch(ctx, client, d, { ref, onBytes: (off) => tracker.bytes(d, off), signal: ac.signal, keep: layer ? 0 : KEEP_BYTES, labels, lane, onVerified });
        } finally {
          lane?.close();
        }
      };
      // Only layers count against the download limit: manifests and configs are small and gate the unpack.
      const r = await (layer ? limiter.run(go) : go()).catch((e: unknown) => {
        throw toNative(e, `failed to fetch ${refKey(d)}`);
      });
      if (r.status === "exists") tracker.exists(d);
      else tracker.complete(d);
      return r;
    };
    /** The labels a blob did not get at commit: its children's gc refs, the distribution source. */
    const finishLabels = async (d: OciDescriptor, r: FetchResult, children?: OciDescriptor[]): Promise<void> => {
      if (children && !(r.labelled && r.data)) await setLabels(deps, ctx, d.digest, childrenLabels(children));
      if (!r.labelled) await appendSourceLabel(deps, ctx, d.digest, client);
    };
    const bytesOf = async (d: OciDescriptor, r: FetchResult): Promise<Buffer> => r.data ?? (await readBlob(deps.content, ctx, d.digest));

    /** `metadataOnly`: a manifest of another platform kept with all_metadata (manifest and config, no layers). */
    const handle = async (d: OciDescriptor, parents: string[], unpackFor: UnpackTarget[], metadataOnly = false): Promise<void> => {
      const me = [refKey(d)];
      if (isIndexType(d.mediaType)) {
        const r = await fetchOne(d, parents, (b) => parseIndex(b).manifests);
        const idx = parseIndex(await bytesOf(d, r));
        await finishLabels(d, r, idx.manifests);
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
        const r = await fetchOne(d, parents, (b) => {
          const m = parseManifest(b);
          return [m.config, ...m.layers];
        });
        const m = parseManifest(await bytesOf(d, r));
        const labelled = finishLabels(d, r, [m.config, ...m.layers]);
        // The unpack reads the config as soon as its bytes are in and verified, not after its commit.
        let configEarly: (b: Buffer) => void = () => undefined;
        const configSeen = new Promise<Buffer>((r) => (configEarly = r));
        const configR = fetchOne(m.config, me, undefined, (b) => configEarly(b));
        const configP = configR.then((cr) => finishLabels(m.config, cr));
        if (metadataOnly) {
          await settleAll([labelled, configP], ac);
          return;
        }
        // A layer can be unpacked once it is committed; its source label (when not set at commit) need not wait.
        const layerRs = m.layers.map((l) => fetchOne(l, me));
        const work: Promise<unknown>[] = [labelled, configP, ...layerRs.map((lr, i) => lr.then((x) => finishLabels(m.layers[i]!, x)))];
        if (unpackFor.length) {
          const configBytes = Promise.race([configSeen, configR.then((cr) => bytesOf(m.config, cr))]);
          work.push(configBytes.then(async (bytes) => {
            const config = parseConfig(bytes);
            for (const t of unpackFor) {
              if (config.os && config.architecture && !platformMatcher([t.platform])({ os: config.os, architecture: config.architecture, variant: config.variant })) continue;
              t.matched = true;
              await unpackLayers(deps, ctx, t.snapshotter, m.config, config, m.layers.map((l, i) => ({ desc: l, fetched: layerRs[i]! })), tracker, configR);
            }
          }));
        }
        await settleAll(work, ac);
        return;
      }
      await finishLabels(d, await fetchOne(d, parents));
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
