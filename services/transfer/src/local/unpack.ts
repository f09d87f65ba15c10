/**
 * Unpacking an image's layers into snapshots, as containerd's unpacker does, one layer as soon as it
 * is fetched and its parent is unpacked: Stat(chainID) (present = already unpacked; every layer's Stat
 * is asked up front) -> Prepare "extract-<unique> <chainID>" on the parent chain (as soon as the parent
 * is committed, while the layer may still be downloading) -> Diff.Apply (the result must be the
 * config's diff ID) -> Commit(chainID); on failure the extract snapshot is removed.
 * The layer blob gets `containerd.io/uncompressed` while the next layer unpacks, and the config
 * `containerd.io/gc.ref.snapshot.<snapshotter>`; all labels are set before the unpack resolves.
 * Work on one chain ID is serialised across transfers in this process.
 */
import type { CallContext } from "#libs/context";
import type { ContentStore } from "#libs/core/content";
import type { Applier } from "#libs/core/diff";
import type { NamespaceStore } from "#libs/core/namespaces";
import type { Mount, SnapshotterSet } from "#libs/core/snapshots";
import { causeText, errFailedPrecondition, errInvalidArgument, isAlreadyExists, isNotFound } from "#libs/errdefs";
import { chainIds, Labels, type ImageConfig, type OciDescriptor } from "#libs/oci";
import type { ProgressTracker } from "./progress";
import { settleAll } from "./deps";
import { KeyedMutex, uniquePart } from "./util";

export const DEFAULT_SNAPSHOTTER = "overlayfs";
export const DEFAULT_SNAPSHOTTER_LABEL = "containerd.io/defaults/snapshotter";

export interface UnpackDeps {
  content: ContentStore;
  snapshots: SnapshotterSet;
  diff: Applier;
  namespaces: NamespaceStore;
  locks: KeyedMutex;
}

export interface LayerUnpack {
  desc: OciDescriptor;
  /** Resolves once the blob is in the content store. */
  fetched: Promise<unknown>;
}

/** The snapshotter to use: the given name, else the namespace's default label, else overlayfs. */
export async function resolveSnapshotter(deps: UnpackDeps, ctx: CallContext, name: string): Promise<string> {
  if (name) return name;
  try {
    const ns = await deps.namespaces.get(ctx, ctx.namespace ?? "");
    return ns.labels[DEFAULT_SNAPSHOTTER_LABEL] || DEFAULT_SNAPSHOTTER;
  } catch {
    return DEFAULT_SNAPSHOTTER;
  }
}

/**
 * Unpack `layers` of the image whose config is `config` (`configDesc`); resolves with the top chain ID.
 * `configFetched` resolves once the config blob is committed (the config is labelled after that).
 */
export async function unpackLayers(
  deps: UnpackDeps, ctx: CallContext, snapshotter: string, configDesc: OciDescriptor, config: ImageConfig, layers: LayerUnpack[], progress?: ProgressTracker,
  configFetched?: Promise<unknown>,
): Promise<string> {
  const diffIds = config.rootfs?.diff_ids ?? [];
  if (diffIds.length !== layers.length) throw errInvalidArgument(`mismatched image rootfs and manifest layers: ${diffIds.length} diff IDs, ${layers.length} layers`);
  const chain = chainIds(diffIds);
  const sn = deps.snapshots.get(snapshotter);
  const exists = (chainId: string): Promise<boolean> => sn.stat(ctx, chainId).then(() => true, (e: unknown) => {
    if (isNotFound(e)) return false;
    throw e;
  });
  // Every layer's Stat at once, while the layers download, instead of one round trip between two applies.
  const present = chain.map(exists);
  for (const p of present) p.catch(() => undefined);
  const prepareExtract = async (chainId: string, parent: string): Promise<{ key: string; mounts: Mount[] }> => {
    for (let tries = 0; ; tries++) {
      const key = `extract-${uniquePart()} ${chainId}`;
      try {
        return { key, mounts: await sn.prepare(ctx, key, parent) };
      } catch (e) {
        if (isAlreadyExists(e) && tries < 3) continue;
        throw errFailedPrecondition(`failed to prepare extraction snapshot "${key}": ${causeText(e)}`, { cause: e });
      }
    }
  };
  // Labels are set while the next layer unpacks; all are in place before this returns.
  const labelling: Promise<unknown>[] = [];
  try {
    for (let i = 0; i < layers.length; i++) {
      const layer = layers[i]!;
      const chainId = chain[i]!;
      const parent = i === 0 ? "" : chain[i - 1]!;
      const lockKey = `${ctx.namespace}\u0000${snapshotter}\u0000${chainId}`;
      // Another unpack of this chain ID in this process may be making it: look again once it is done.
      const stale = deps.locks.held(lockKey);
      await deps.locks.run(lockKey, async () => {
        if (await (stale ? exists(chainId) : present[i]!)) return;
        // The extraction snapshot is prepared while the layer may still be downloading.
        const prepared = prepareExtract(chainId, parent);
        prepared.catch(() => undefined);
        try {
          await layer.fetched;
        } catch (e) {
          const p = await prepared.catch(() => undefined);
          if (p) await sn.remove(ctx, p.key).catch(() => undefined);
          throw e;
        }
        const { key, mounts } = await prepared;
        progress?.state(layer.desc, "extracting");
        try {
          const applied = await deps.diff.apply(ctx, layer.desc, mounts);
          if (applied.digest !== diffIds[i]) throw errFailedPrecondition(`wrong diff id calculated on extraction "${diffIds[i]}"`);
          try {
            await sn.commit(ctx, chainId, key);
          } catch (e) {
            if (!isAlreadyExists(e)) throw e;
            await sn.remove(ctx, key).catch(() => undefined);
          }
        } catch (e) {
          await sn.remove(ctx, key).catch(() => undefined);
          throw e;
        }
        progress?.state(layer.desc, "extracted");
        const labelled = deps.content.update(ctx, { digest: layer.desc.digest, labels: { [Labels.uncompressed]: diffIds[i]! } }, [`labels.${Labels.uncompressed}`]);
        labelled.catch(() => undefined);
        labelling.push(labelled);
      });
    }
    const top = chain[chain.length - 1];
    if (top) {
      const key = `${Labels.gcRefSnapshotPrefix}${snapshotter}`;
      // With every layer unpacked already, this comes before the config's own commit: wait for it.
      labelling.push(Promise.resolve(configFetched).then(() => deps.content.update(ctx, { digest: configDesc.digest, labels: { [key]: top } }, [`labels.${key}`])));
    }
  } finally {
    await Promise.allSettled(labelling);
  }
  await settleAll(labelling);
  return chain[chain.length - 1] ?? "";
}
