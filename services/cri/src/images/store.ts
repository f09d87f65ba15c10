/**
 * The CRI's images, read from the image records of the `k8s.io` namespace at each call (so an image
 * pulled or removed with `ctr -n k8s.io`, or by another process, shows at once, and nothing is to be
 * recovered after a restart): records are grouped by their config digest, the image id. What a
 * target resolves to (platform manifest, config, chain ID, size) never changes for a digest, so it is
 * read from the content store once and kept.
 *
 * Lookup follows containerd's CRI (localResolve): a full image id; else a reference, normalised as
 * docker does (`busybox` is `docker.io/library/busybox:latest`); else a unique prefix of an id
 * (`sha256:1a2b`, or the hex alone).
 */
import type { CallContext } from "#libs/context";
import type { ContentStore } from "#libs/core/content";
import type { Descriptor, Image, ImageStore } from "#libs/core/images";
import { errFailedPrecondition, errInvalidArgument, errNotFound, isFailedPrecondition, isNotFound } from "#libs/errdefs";
import { chainIds, hostPlatform, isIndexType, isManifestType, platformMatcher, platformRank, type OciDescriptor, type OciIndex, type OciManifest, type Platform } from "#libs/oci";
import { formatReference, normalizeReference } from "#libs/registry/reference";
import { readJson } from "#libs/sandboxrun/image";
import { PINNED_LABEL_KEY, PINNED_LABEL_VALUE, sortReferences, type CriImage, type ImageSpec } from "./record";

/** What a target digest resolves to for this platform. */
interface Resolved {
  config: Descriptor;
  spec: ImageSpec;
  chainId: string;
  size: number;
}

const FULL_DIGEST = /^sha256:[a-f0-9]{64}$/;

/** docker's ParseDockerRef: the normalised name, a digest winning over a tag; undefined when not a reference. */
export function normalizeRef(ref: string): string | undefined {
  if (/^[a-f0-9]{64}$/.test(ref)) return undefined;
  try {
    const r = normalizeReference(ref);
    if (r.digest) delete r.tag;
    return formatReference(r);
  } catch {
    return undefined;
  }
}

export class CriImageStore {
  private readonly resolved = new Map<string, Promise<Resolved>>();

  constructor(
    private readonly images: ImageStore,
    private readonly content: ContentStore,
    private readonly platform: Platform = hostPlatform(),
  ) {}

  /** Every image of the namespace of `ctx`, one per id; records whose content is missing are left out. */
  async list(ctx: CallContext): Promise<CriImage[]> {
    return this.group(ctx, await this.images.list(ctx));
  }

  /** The image `refOrId` names (localResolve); NotFound when none. */
  async get(ctx: CallContext, refOrId: string): Promise<CriImage> {
    if (!refOrId) throw errInvalidArgument("image name must not be empty");
    const all = await this.list(ctx);
    if (FULL_DIGEST.test(refOrId)) {
      const hit = all.find((i) => i.id === refOrId);
      if (hit) return hit;
    }
    const name = normalizeRef(refOrId);
    if (name) {
      const hit = all.find((i) => i.references.includes(name));
      if (hit) return hit;
    }
    return this.byPrefix(all, refOrId);
  }

  /** What the target of a record resolves to (cached by digest); for callers that already hold a record. */
  describe(ctx: CallContext, target: Descriptor): Promise<Resolved> {
    let p = this.resolved.get(target.digest);
    if (!p) {
      p = this.resolve(ctx, target);
      this.resolved.set(target.digest, p);
      p.catch(() => this.resolved.delete(target.digest));
    }
    return p;
  }

  /** go-digest's digestset lookup: `sha256:<hex prefix>` or a hex prefix, which must name one id. */
  private byPrefix(all: CriImage[], s: string): CriImage {
    const m = /^(?:sha256:)?([a-f0-9]+)$/.exec(s);
    const hits = m ? all.filter((i) => i.id.slice("sha256:".length).startsWith(m[1]!)) : [];
    if (hits.length === 1) return hits[0]!;
    if (hits.length > 1) throw errInvalidArgument(`image id ${JSON.stringify(s)} is ambiguous: ${hits.length} images match`);
    throw errNotFound(`image ${JSON.stringify(s)}: not found`);
  }

  private async group(ctx: CallContext, records: Image[]): Promise<CriImage[]> {
    const byId = new Map<string, { rec: CriImage; refs: string[] }>();
    const described = await Promise.all(records.map(async (img) => {
      try {
        return { img, r: await this.describe(ctx, img.target) };
      } catch (e) {
        // A record whose blobs are gone (or not this platform's) is no CRI image, as in containerd.
        if (isNotFound(e) || isFailedPrecondition(e)) return undefined;
        throw e;
      }
    }));
    for (const d of described) {
      if (!d) continue;
      const { img, r } = d;
      const id = r.config.digest;
      let g = byId.get(id);
      if (!g) {
        g = { rec: { id, references: [], chainId: r.chainId, size: r.size, spec: r.spec, target: img.target, config: r.config, pinned: false }, refs: [] };
        byId.set(id, g);
      }
      g.refs.push(img.name);
      if (img.labels[PINNED_LABEL_KEY] === PINNED_LABEL_VALUE) g.rec.pinned = true;
    }
    return [...byId.values()].map(({ rec, refs }) => {
      rec.references = sortReferences(refs);
      return rec;
    });
  }

  private async resolve(ctx: CallContext, target: Descriptor): Promise<Resolved> {
    let desc: OciDescriptor = target;
    let size = 0;
    const match = platformMatcher([this.platform]);
    for (let depth = 0; isIndexType(desc.mediaType); depth++) {
      if (depth > 4) throw errInvalidArgument(`image ${target.digest}: indexes nested too deep`);
      size += desc.size;
      const idx = (await readJson(ctx, this.content, desc.digest)) as unknown as OciIndex;
      const pick = (idx.manifests ?? []).filter((m) => match(m.platform) && (isIndexType(m.mediaType) || isManifestType(m.mediaType)))
        .sort((a, b) => platformRank([this.platform], a.platform) - platformRank([this.platform], b.platform))[0];
      if (!pick) throw errNotFound(`image ${target.digest}: no manifest for ${this.platform.os}/${this.platform.architecture}`);
      desc = pick;
    }
    if (!isManifestType(desc.mediaType)) throw errNotFound(`image ${target.digest}: unsupported media type ${desc.mediaType}`);
    const man = (await readJson(ctx, this.content, desc.digest)) as unknown as OciManifest;
    if (!man.config?.digest) throw errFailedPrecondition(`image ${target.digest}: manifest ${desc.digest} has no config`);
    const spec = (await readJson(ctx, this.content, man.config.digest)) as ImageSpec;
    const diffIds = (spec.rootfs?.diff_ids ?? []).filter((d): d is string => typeof d === "string");
    size += desc.size + man.config.size + (man.layers ?? []).reduce((n, l) => n + Math.max(0, l.size), 0);
    return {
      config: { mediaType: man.config.mediaType, digest: man.config.digest, size: man.config.size, annotations: man.config.annotations ?? {} },
      spec,
      chainId: chainIds(diffIds).at(-1) ?? "",
      size,
    };
  }
}
