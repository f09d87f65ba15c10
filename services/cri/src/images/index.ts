/**
 * The images part: the CRI ImageService (ListImages, ImageStatus, PullImage, RemoveImage,
 * ImageFsInfo) over the images, content, snapshots and transfer processes, in the `k8s.io` namespace,
 * answering as containerd's CRI does:
 * - an image is the set of image records sharing a config digest; its id is that digest; RepoTags and
 *   RepoDigests are the upstream names it was pulled by (a mirror from hosts.toml never shows);
 * - PullImage goes through the Transfer service (registry source with the `config_path` hosts dir and
 *   the request's or the config's credentials; destination the image store, unpacked into the CRI's
 *   snapshotter), then records the image id, the repo tag and the repo digest as image records
 *   labelled `io.cri-containerd.image=managed` (the sandbox image also `io.cri-containerd.pinned=pinned`);
 * - ImageStatus and RemoveImage of an image that is not there answer empty, not NotFound;
 * - ImageFsInfo sums the usage of the snapshotter's snapshots of the namespace (collected at most every
 *   `stats_collect_period` seconds) and names the snapshotter's root as the mount point.
 */
import * as path from "node:path";
import { background, withNamespace, type CallContext } from "#libs/context";
import { ContentStoreProxy } from "#libs/clients/content";
import { ImageStoreProxy } from "#libs/clients/images";
import { IntrospectionProxy } from "#libs/clients/introspection";
import { SnapshotterSetProxy } from "#libs/clients/snapshots";
import { TransferClient } from "#libs/clients/transfer";
import type { Descriptor } from "#libs/core/images";
import { errCanceled, errInvalidArgument, errorCode, FlotillaError, isAlreadyExists, isNotFound } from "#libs/errdefs";
import { hostPlatform } from "#libs/oci";
import { parseReference } from "#libs/registry/reference";
import { CRI_NAMESPACE, type CriDeps, type ImageRecord, type ImagesPart } from "../parts";
import {
  IMAGE_LABEL_KEY, IMAGE_LABEL_VALUE, PINNED_LABEL_KEY, PINNED_LABEL_VALUE, pulledNames, repoTagsAndDigests, toCriImage, verboseInfo, type CriImage,
} from "./record";
import { credentialsCallback, hostDirFor, writeMirrorHosts, type CriAuth } from "./registry";
import { CriImageStore, normalizeRef } from "./store";

export { CriImageStore, normalizeRef } from "./store";

interface FsUsage {
  timestamp: number;
  usedBytes: number;
  inodesUsed: number;
}

export function createImages(deps: CriDeps): ImagesPart {
  const cfg = deps.config;
  const images = new ImageStoreProxy(deps.channel("images"));
  const content = new ContentStoreProxy(deps.channel("content"));
  const snapshots = new SnapshotterSetProxy(deps.channel("snapshots"));
  const transfer = new TransferClient(deps.channel("transfer"));
  const store = new CriImageStore(images, content);
  const platform = hostPlatform();
  const mirrorDir = cfg.registry.config_paths.length ? undefined : writeMirrorHosts(cfg, path.join(deps.state, "registry-mirrors"));
  const sandboxImage = normalizeRef(cfg.sandbox_image);
  const ns = (ctx: CallContext): CallContext => withNamespace(ctx, CRI_NAMESPACE);

  /** The record container creation works from (A's ImageRecord shape). */
  const recordOf = (img: CriImage): ImageRecord => {
    const { repoTags, repoDigests } = repoTagsAndDigests(img.references);
    return {
      id: img.id,
      repoTags,
      repoDigests,
      name: img.references[0] ?? img.id,
      target: { mediaType: img.target.mediaType, digest: img.target.digest, size: img.target.size },
      config: (img.spec.config ?? {}) as Record<string, unknown>,
      chainId: img.chainId,
      snapshotter: cfg.containerd.snapshotter,
      size: img.size,
    };
  };

  /** containerd's createImageReference: a managed record `name` -> `target` (kept when it already is one). */
  const reference = async (ctx: CallContext, name: string, target: Descriptor, pinned: boolean): Promise<void> => {
    const labels: Record<string, string> = { [IMAGE_LABEL_KEY]: IMAGE_LABEL_VALUE, ...(pinned ? { [PINNED_LABEL_KEY]: PINNED_LABEL_VALUE } : {}) };
    try {
      await images.create(ctx, { name, target, labels });
      return;
    } catch (e) {
      if (!isAlreadyExists(e)) throw e;
    }
    const old = await images.get(ctx, name);
    const paths = ["target", `labels.${IMAGE_LABEL_KEY}`, ...(pinned ? [`labels.${PINNED_LABEL_KEY}`] : [])];
    if (old.target.digest === target.digest && old.labels[IMAGE_LABEL_KEY] === IMAGE_LABEL_VALUE && (!pinned || old.labels[PINNED_LABEL_KEY] === PINNED_LABEL_VALUE)) return;
    await images.update(ctx, { name, target, labels: { ...old.labels, ...labels } }, paths);
  };

  /** Pull `ref` (already normalised) and record its names; returns the image id. */
  const pull = async (callCtx: CallContext, ref: string, auth: CriAuth | null | undefined): Promise<string> => {
    const r = parseReference(ref);
    const pinned = ref === sandboxImage;
    // containerd's image_pull_progress_timeout: a pull that makes no progress for that long is cancelled.
    const ac = new AbortController();
    const onAbort = (): void => ac.abort(callCtx.signal.reason);
    callCtx.signal.addEventListener("abort", onAbort, { once: true });
    const limit = cfg.image_pull_progress_timeout_ms;
    let timer: NodeJS.Timeout | undefined;
    const arm = (): void => {
      if (!limit) return;
      clearTimeout(timer);
      timer = setTimeout(() => ac.abort(errCanceled(`no progress for ${cfg.image_pull_progress_timeout}`)), limit);
    };
    const ctx = { ...ns(callCtx), signal: ac.signal };
    arm();
    try {
      await transfer.pull(
        ctx,
        ref,
        {
          labels: { [IMAGE_LABEL_KEY]: IMAGE_LABEL_VALUE, ...(pinned ? { [PINNED_LABEL_KEY]: PINNED_LABEL_VALUE } : {}) },
          platforms: [platform],
          unpacks: [{ platform, snapshotter: cfg.containerd.snapshotter }],
        },
        {
          hostDir: hostDirFor(cfg.registry.config_paths, r.domain) ?? mirrorDir,
          headers: cfg.registry.headers,
          credentials: credentialsCallback(cfg, auth),
        },
        { progress: arm },
      );
    } catch (e) {
      const err = ac.signal.aborted && !callCtx.signal.aborted ? ac.signal.reason : e;
      throw wrap(`failed to pull and unpack image ${JSON.stringify(ref)}`, err);
    } finally {
      clearTimeout(timer);
      callCtx.signal.removeEventListener("abort", onAbort);
    }
    const img = await images.get(ns(callCtx), ref);
    const d = await store.describe(ns(callCtx), img.target);
    const id = d.config.digest;
    const { repoTag, repoDigest } = pulledNames(ref, img.target.digest);
    for (const name of [id, repoTag, repoDigest]) {
      if (name) await reference(ns(callCtx), name, img.target, pinned);
    }
    return id;
  };

  const parseRef = (ref: string): string => {
    const n = normalizeRef(ref);
    if (!n) throw errInvalidArgument(`failed to parse image reference ${JSON.stringify(ref)}`);
    return n;
  };

  let fsCache: { at: number; usage: Promise<FsUsage> } | undefined;
  let fsRoot: Promise<string> | undefined;

  /** The snapshotter's root directory, as its process exports it (introspection). */
  const snapshotterRoot = (ctx: CallContext): Promise<string> => {
    fsRoot ??= new IntrospectionProxy(deps.channel("gateway"))
      .plugins(ctx, [`type==io.containerd.snapshotter.v1,id==${cfg.containerd.snapshotter}`])
      .then((ps) => ps[0]?.exports?.root ?? "")
      .catch(() => {
        fsRoot = undefined;
        return "";
      });
    return fsRoot;
  };

  const collectUsage = async (ctx: CallContext): Promise<FsUsage> => {
    const sn = snapshots.get(cfg.containerd.snapshotter);
    const keys: string[] = [];
    await sn.walk(ctx, (info) => {
      keys.push(info.name);
    });
    let usedBytes = 0;
    let inodesUsed = 0;
    for (const k of keys) {
      try {
        const u = await sn.usage(ctx, k);
        usedBytes += u.size;
        inodesUsed += u.inodes;
      } catch (e) {
        if (!isNotFound(e)) throw e;
      }
    }
    return { timestamp: Date.now() * 1e6, usedBytes, inodesUsed };
  };

  /** containerd's localResolve as ImageStatus and RemoveImage use it: undefined when not there. */
  const lookup = async (ctx: CallContext, ref: string): Promise<CriImage | undefined> => {
    try {
      return await store.get(ns(ctx), ref);
    } catch (e) {
      if (isNotFound(e)) return undefined;
      throw wrap(`can not resolve ${JSON.stringify(ref)} locally`, e);
    }
  };

  return {
    async list(ctx) {
      const all = await store.list(ns(ctx));
      return { images: all.map(toCriImage) };
    },

    async status(ctx, req) {
      const img = await lookup(ctx, req.image?.image ?? "");
      if (!img) return { image: null, info: {} };
      return { image: toCriImage(img), info: req.verbose ? verboseInfo(img) : {} };
    },

    async pull(ctx, req) {
      const ref = parseRef(req.image?.image ?? "");
      return { image_ref: await pull(ctx, ref, req.auth) };
    },

    async remove(ctx, req) {
      const img = await lookup(ctx, req.image?.image ?? "");
      if (!img) return {};
      const names = img.references;
      for (let i = 0; i < names.length; i++) {
        try {
          // The last one waits for the collection, so the image's content and snapshots are gone on return.
          await images.delete(ns(ctx), names[i]!, { sync: i === names.length - 1 });
        } catch (e) {
          if (!isNotFound(e)) throw wrap(`failed to delete image reference ${JSON.stringify(names[i])} for ${JSON.stringify(img.id)}`, e);
        }
      }
      return {};
    },

    async fsInfo(ctx) {
      const now = Date.now();
      if (!fsCache || now - fsCache.at >= cfg.stats_collect_period * 1000) {
        const usage = collectUsage(ns(ctx));
        fsCache = { at: now, usage };
        usage.catch(() => (fsCache = undefined));
      }
      const [u, root] = await Promise.all([fsCache.usage, snapshotterRoot(ns(ctx))]);
      const fs = { timestamp: u.timestamp, fs_id: { mountpoint: root }, used_bytes: { value: u.usedBytes }, inodes_used: { value: u.inodesUsed } };
      return { image_filesystems: [fs], container_filesystems: [] };
    },

    async resolve(ref) {
      return recordOf(await store.get(background(CRI_NAMESPACE, { signal: deps.stopping }), ref));
    },

    async ensure(ctx, ref) {
      const name = parseRef(ref);
      try {
        return recordOf(await store.get(ns(ctx), name));
      } catch (e) {
        if (!isNotFound(e)) throw e;
      }
      const id = await pull(ctx, name, undefined);
      return recordOf(await store.get(ns(ctx), id));
    },

    async close() {},
  };
}

/** `err` with `context` in front of its message, keeping its class (containerd's `fmt.Errorf("...: %w")`). */
function wrap(context: string, err: unknown): FlotillaError {
  return new FlotillaError(errorCode(err), `${context}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
}
