/**
 * Export (ImageStore -> ImageExportStream): an OCI image layout as a tar, streamed from the content
 * store over the byte stream: `blobs/<alg>/<hex>` for everything the images reference on the chosen
 * platforms, `index.json` naming each image (`io.containerd.image.name`, `org.opencontainers.image.ref.name`),
 * a Docker-compatible `manifest.json` unless skipped, and `oci-layout`. Entries are in name order, as
 * containerd writes them.
 */
import type { CallContext } from "#libs/context";
import { sendBytes } from "#libs/clients/transfer";
import type { Descriptor } from "#libs/core/images";
import type { ExportStreamSpec, ImageStoreSpec, ProgressFn } from "#libs/core/transfer";
import { ProgressEvents } from "#libs/core/transfer";
import { errInvalidArgument } from "#libs/errdefs";
import {
  Annotations, hostPlatform, isIndexType, isManifestType, isNonDistributable, MediaTypes, parseIndex, parseManifest, platformMatcher, refKey, type OciDescriptor,
} from "#libs/oci";
import { parseReference } from "#libs/registry";
import type { TransferDeps } from "./deps";
import { ProgressTracker } from "./progress";
import { TAR_END, tarFile, tarHeader, tarPadding } from "./tar";
import { blobChunks, readBlob } from "./util";

/** The tag (or `@digest`) part of a name, for `org.opencontainers.image.ref.name`. */
export function ociRefName(name: string): string {
  try {
    const r = parseReference(name);
    return r.tag ?? (r.digest ? `@${r.digest}` : name);
  } catch {
    return name;
  }
}

/** Docker's familiar form for manifest.json RepoTags: `docker.io/library/x:t` -> `x:t`. */
export function familiarName(name: string): string {
  return name.replace(/^docker\.io\/library\//, "").replace(/^docker\.io\//, "");
}

interface DockerEntry {
  Config: string;
  RepoTags: string[];
  Layers: string[];
}

const blobPath = (digest: string): string => `blobs/${digest.replace(":", "/")}`;

export async function exportArchive(deps: TransferDeps, ctx: CallContext, src: ImageStoreSpec, dst: ExportStreamSpec, progressFn?: ProgressFn): Promise<void> {
  const names = [src.name, ...src.extraReferences.filter((r) => !r.isPrefix).map((r) => r.name)].filter(Boolean);
  if (!names.length) throw errInvalidArgument("no image to export");
  const imgs = [];
  for (const n of names) imgs.push(await deps.images.get(ctx, n));
  const match = dst.allPlatforms ? () => true : platformMatcher(dst.platforms.length ? dst.platforms : [hostPlatform()]);
  const blobs = new Map<string, OciDescriptor>();
  const docker: DockerEntry[] = [];
  const tracker = new ProgressTracker(progressFn, names[0]!, ProgressEvents.exporting);
  progressFn?.({ event: ProgressEvents.exporting, name: names.join(", ") });

  const walk = async (d: OciDescriptor, name: string, parents: string[], dockerSeen: { done: boolean }): Promise<void> => {
    if (dst.skipNonDistributable && isNonDistributable(d.mediaType)) return;
    if (!blobs.has(d.digest)) tracker.add(d, parents);
    blobs.set(d.digest, d);
    if (isIndexType(d.mediaType)) {
      const idx = parseIndex(await readBlob(deps.content, ctx, d.digest));
      for (const m of idx.manifests) if (match(m.platform)) await walk(m, name, [refKey(d)], dockerSeen);
    } else if (isManifestType(d.mediaType)) {
      const m = parseManifest(await readBlob(deps.content, ctx, d.digest));
      const layers = m.layers.filter((l) => !(dst.skipNonDistributable && isNonDistributable(l.mediaType)));
      for (const c of [m.config, ...layers]) {
        if (!blobs.has(c.digest)) tracker.add(c, [refKey(d)]);
        blobs.set(c.digest, c);
      }
      if (!dockerSeen.done) {
        dockerSeen.done = true;
        const tag = ociRefName(name);
        docker.push({ Config: blobPath(m.config.digest), RepoTags: tag.startsWith("@") ? [] : [familiarName(name)], Layers: layers.map((l) => blobPath(l.digest)) });
      }
    }
  };
  const manifests: Descriptor[] = [];
  for (let i = 0; i < imgs.length; i++) {
    const img = imgs[i]!;
    await walk(img.target, names[i]!, [], { done: false });
    manifests.push({ ...img.target, annotations: { ...img.target.annotations, [Annotations.ImageName]: names[i]!, [Annotations.RefName]: ociRefName(names[i]!) } });
  }
  const indexJson = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.OciIndex, manifests: manifests.map((m) => ({ mediaType: m.mediaType, digest: m.digest, size: m.size, annotations: m.annotations })) }));
  const files = new Map<string, Buffer>([["index.json", indexJson], ["oci-layout", Buffer.from(JSON.stringify({ imageLayoutVersion: "1.0.0" }))]]);
  if (!dst.skipCompatibilityManifest) {
    // Merge entries that share a config (several names for one image).
    const merged: DockerEntry[] = [];
    for (const e of docker) {
      const same = merged.find((x) => x.Config === e.Config);
      if (same) same.RepoTags.push(...e.RepoTags.filter((t) => !same.RepoTags.includes(t)));
      else merged.push(e);
    }
    files.set("manifest.json", Buffer.from(JSON.stringify(merged)));
  }
  const sorted = [...blobs.values()].sort((a, b) => (blobPath(a.digest) < blobPath(b.digest) ? -1 : 1));
  const algs = [...new Set(sorted.map((d) => d.digest.split(":")[0]!))].sort();

  async function* archive(): AsyncGenerator<Buffer> {
    yield tarHeader({ name: "blobs/", size: 0, type: "directory", mode: 0o755 });
    for (const alg of algs) yield tarHeader({ name: `blobs/${alg}/`, size: 0, type: "directory", mode: 0o755 });
    for (const d of sorted) {
      yield tarHeader({ name: blobPath(d.digest), size: d.size, type: "file", mode: 0o444 });
      let n = 0;
      for await (const c of blobChunks(deps.content, ctx, d.digest)) {
        n += c.length;
        tracker.bytes(d, n);
        yield c;
      }
      if (n !== d.size) throw errInvalidArgument(`blob ${d.digest}: read ${n} bytes, descriptor says ${d.size}`);
      yield tarPadding(d.size);
      tracker.complete(d);
    }
    for (const [name, data] of [...files.entries()].sort(([a], [b]) => (a < b ? -1 : 1))) yield tarFile(name, data, { mode: 0o444 });
    yield TAR_END;
  }
  await sendBytes(dst.stream, archive());
  progressFn?.({ event: ProgressEvents.completedExport });
}
