/**
 * Import (ImageImportStream -> ImageStore): an OCI image layout tar or a `docker save` tar (optionally
 * gzip-compressed), read as it streams in. Every blob entry is written to the content store as it
 * passes (ref `tar-<path>`; the digest in `blobs/<alg>/<hex>` names is verified), small JSON files are
 * kept in memory. Docker archives get a schema 2 manifest per `manifest.json` entry and an index.
 * Then, as `ctr images import` does: gc.ref labels down the tree, one image per index entry
 * (Update of the target, Create when absent), and unpack per requested platform.
 */
import { Readable } from "node:stream";
import * as zlib from "node:zlib";
import type { CallContext } from "#libs/context";
import { receiveBytes, sendBytes } from "#libs/clients/transfer";
import type { ContentStore } from "#libs/core/content";
import { MAX_CHUNK } from "#libs/core/content";
import type { ExportStreamSpec, ImageStoreSpec, ImportStreamSpec, ProgressFn } from "#libs/core/transfer";
import { ProgressEvents } from "#libs/core/transfer";
import { causeText, errInvalidArgument, isAlreadyExists, isFailedPrecondition, isNotFound } from "#libs/errdefs";
import {
  Annotations, childrenLabels, isIndexType, isManifestType, MediaTypes, parseConfig, parseIndex, parseManifest, platformMatcher, platformRank, sha256,
  type OciDescriptor, type Platform,
} from "#libs/oci";
import { formatReference, normalizeReference, parseReference } from "#libs/registry";
import { settleAll, toNative, type TransferDeps } from "./deps";
import { openWriter } from "./fetch";
import { targetOf } from "./images";
import { ProgressTracker } from "./progress";
import { setLabels } from "./pull";
import { readTar, TarFormatError } from "./tar";
import { resolveSnapshotter, unpackLayers } from "./unpack";
import { blobChunks, readBlob } from "./util";

const KEEP_LIMIT = 16 << 20;
const BLOB_NAME = /^blobs\/(sha256|sha384|sha512)\/([0-9a-f]+)$/;
const LEGACY = /(^|\/)(json|VERSION)$|^repositories$/;

interface Written {
  digest: string;
  size: number;
  /** First bytes, for compression sniffing. */
  magic: Buffer;
}

/** Write `body` (`size` bytes) as a blob; `expected` "" lets the content service compute the digest. */
export async function writeBlob(content: ContentStore, ctx: CallContext, ref: string, size: number, expected: string, body: AsyncIterable<Buffer>, onBytes?: (n: number) => void): Promise<Written> {
  const desc = { mediaType: "", digest: expected, size };
  let magic = Buffer.alloc(0);
  const w = await openWriter(content, ctx, desc, ref);
  if (!w) {
    for await (const c of body) if (magic.length < 8) magic = Buffer.concat([magic, c.subarray(0, 8 - magic.length)]);
    return { digest: expected, size, magic };
  }
  let committing = false;
  try {
    const st = await w.status();
    if (st.offset > 0) await w.truncate(0);
    // A reused staging buffer (see BlobFetcher): the writer has encoded the data when write() resolves.
    const stage = Buffer.allocUnsafe(size > 0 ? Math.min(MAX_CHUNK, size) : MAX_CHUNK);
    let used = 0;
    let n = 0;
    const flush = async (): Promise<void> => {
      if (!used) return;
      await w.write(stage.subarray(0, used));
      used = 0;
    };
    for await (const c of body) {
      if (magic.length < 8) magic = Buffer.concat([magic, c.subarray(0, 8 - magic.length)]);
      n += c.length;
      let chunk = c;
      while (chunk.length) {
        const k = chunk.copy(stage, used);
        used += k;
        chunk = chunk.subarray(k);
        if (used === stage.length) await flush();
      }
      onBytes?.(n);
    }
    await flush();
    // The writer's digest covers what the service has acknowledged: with writes in flight, ask first.
    if (!expected) await w.status();
    const digest = expected || w.digest() || sha256(Buffer.alloc(0));
    committing = true;
    await w.commit(size, expected);
    return { digest, size: size || n, magic };
  } catch (e) {
    await w.close().catch(() => undefined);
    if (isAlreadyExists(e)) return { digest: expected || w.digest(), size, magic };
    if (committing && isFailedPrecondition(e)) {
      await content.abort(ctx, ref).catch(() => undefined);
      throw errInvalidArgument(`archive entry ${ref.slice(4)}: ${causeText(e)}`, { cause: e });
    }
    throw e;
  }
}

async function writeBytes(content: ContentStore, ctx: CallContext, ref: string, bytes: Buffer): Promise<OciDescriptor> {
  const digest = sha256(bytes);
  await writeBlob(content, ctx, ref, bytes.length, digest, (async function* () { yield bytes; })());
  return { mediaType: "", digest, size: bytes.length };
}

/** The archive bytes, gunzipped when they start with the gzip magic. */
async function* decompressed(src: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
  const it = src[Symbol.asyncIterator]();
  let first = await it.next();
  while (!first.done && first.value.length === 0) first = await it.next();
  if (first.done) return;
  const head = first.value;
  const rest = (async function* () {
    yield head;
    for (;;) {
      const r = await it.next();
      if (r.done) return;
      yield r.value;
    }
  })();
  if (head[0] === 0x1f && head[1] === 0x8b) {
    yield* Readable.from(rest).pipe(zlib.createGunzip()) as AsyncIterable<Buffer>;
  } else {
    yield* rest;
  }
}

function layerMediaType(magic: Buffer): string {
  if (magic[0] === 0x1f && magic[1] === 0x8b) return MediaTypes.DockerLayerGzip;
  if (magic.readUInt32LE(0) === 0xfd2fb528) return "application/vnd.docker.image.rootfs.diff.tar.zstd";
  return MediaTypes.DockerLayerTar;
}

/** An image name for an index entry, from its annotations (ctr import's rules; `prefix` from --base-name). */
export function importName(annotations: Record<string, string> | undefined, prefix: string | undefined, today = new Date()): string | undefined {
  const full = annotations?.[Annotations.ImageName];
  if (full) return full;
  const ref = annotations?.[Annotations.RefName];
  if (!ref) return undefined;
  try {
    if (ref.includes("/")) return formatReference(parseReference(ref));
  } catch {
    /* not a full reference: a tag */
  }
  const base = prefix ?? `import-${today.toISOString().slice(0, 10)}`;
  return `${base}:${ref}`;
}

export async function importArchive(deps: TransferDeps, ctx: CallContext, src: ImportStreamSpec, dst: ImageStoreSpec, progressFn?: ProgressFn): Promise<void> {
  const emit = (p: Parameters<ProgressFn>[0]): void => {
    try {
      progressFn?.(p);
    } catch {
      /* ignore */
    }
  };
  emit({ event: ProgressEvents.importing });
  const kept = new Map<string, Buffer>();
  const written = new Map<string, Written>();
  try {
    for await (const { header, body } of readTar(decompressed(receiveBytes(src.stream)))) {
      const name = header.name.replace(/^(\.\/)+/, "").replace(/^\/+/, "");
      if (header.type !== "file" || !name) continue;
      const m = BLOB_NAME.exec(name);
      if (m) {
        const expected = `${m[1]}:${m[2]}`;
        emit({ event: ProgressEvents.importing, name: `tar-${name}`, progress: 0, total: header.size });
        written.set(name, await writeBlob(deps.content, ctx, `tar-${name}`, header.size, expected, body));
        emit({ event: "complete", name: `tar-${name}`, progress: header.size, total: header.size });
        continue;
      }
      if ((name.endsWith(".json") || name === "oci-layout") && header.size <= KEEP_LIMIT) {
        const chunks: Buffer[] = [];
        for await (const c of body) chunks.push(c);
        kept.set(name, Buffer.concat(chunks));
        continue;
      }
      if (LEGACY.test(name)) continue;
      emit({ event: ProgressEvents.importing, name: `tar-${name}`, progress: 0, total: header.size });
      written.set(name, await writeBlob(deps.content, ctx, `tar-${name}`, header.size, "", body));
      emit({ event: "complete", name: `tar-${name}`, progress: header.size, total: header.size });
    }
  } catch (e) {
    if (e instanceof TarFormatError) throw errInvalidArgument(`invalid image archive: ${e.message}`, { cause: e });
    if (e instanceof Error && /incorrect header check|unexpected end of file/.test(e.message)) throw errInvalidArgument(`invalid image archive: ${e.message}`, { cause: e });
    throw e;
  }

  // The index: the archive's own, or one built from docker's manifest.json.
  let indexDesc: OciDescriptor;
  let manifests: OciDescriptor[];
  try {
    const idxBytes = kept.get("index.json");
    if (idxBytes) {
      manifests = parseIndex(idxBytes).manifests;
      indexDesc = { ...(await writeBytes(deps.content, ctx, "tar-index.json", idxBytes)), mediaType: MediaTypes.OciIndex };
    } else if (kept.has("manifest.json")) {
      manifests = await dockerManifests(deps, ctx, kept, written, src.forceCompress);
      const idx = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.OciIndex, manifests }));
      indexDesc = { ...(await writeBytes(deps.content, ctx, "tar-generated-index.json", idx)), mediaType: MediaTypes.OciIndex };
    } else {
      throw errInvalidArgument("invalid image archive: neither index.json nor manifest.json found");
    }
  } catch (e) {
    throw toNative(e);
  }

  // gc.ref labels down the tree, filtered by platform like ctr's import.
  const matcher = dst.platforms.length ? platformMatcher(dst.platforms) : undefined;
  await setLabels(deps, ctx, indexDesc.digest, childrenLabels(manifests));
  const labelled = new Set<string>();
  const label = async (d: OciDescriptor): Promise<void> => {
    if (labelled.has(d.digest) || !(isIndexType(d.mediaType) || isManifestType(d.mediaType))) return;
    labelled.add(d.digest);
    let bytes: Buffer;
    try {
      bytes = await readBlob(deps.content, ctx, d.digest);
    } catch (e) {
      if (isNotFound(e)) return;
      throw e;
    }
    if (isIndexType(d.mediaType)) {
      const kids = parseIndex(bytes).manifests;
      await setLabels(deps, ctx, d.digest, childrenLabels(kids));
      for (const k of kids) if (!matcher || matcher(k.platform)) await label(k);
    } else {
      const m = parseManifest(bytes);
      await setLabels(deps, ctx, d.digest, childrenLabels([m.config, ...m.layers]));
    }
  };
  for (const m of manifests) if (!matcher || matcher(m.platform)) await label(m);

  // Images.
  const prefix = dst.extraReferences.find((r) => r.isPrefix)?.name;
  const created: { name: string; target: OciDescriptor }[] = [];
  for (const m of manifests) {
    const name = importName(m.annotations, prefix);
    if (name) created.push({ name, target: m });
  }
  if (dst.name) created.push({ name: dst.name, target: indexDesc });
  for (const r of dst.extraReferences) if (!r.isPrefix && r.name && created.length) created.push({ name: r.name, target: created[0]!.target });
  for (const c of created) {
    const target = targetOf(c.target);
    try {
      await deps.images.update(ctx, { name: c.name, labels: dst.labels, target }, ["target"]);
    } catch (e) {
      if (!isNotFound(e)) throw e;
      try {
        await deps.images.create(ctx, { name: c.name, labels: dst.labels, target });
      } catch (e2) {
        if (!isAlreadyExists(e2)) throw e2;
        await deps.images.update(ctx, { name: c.name, labels: dst.labels, target }, ["target"]);
      }
    }
    emit({ event: ProgressEvents.saved, name: c.name, desc: target });
  }

  // Unpack each image for each requested platform.
  const tracker = new ProgressTracker(progressFn, "import");
  for (const u of dst.unpacks) {
    const snapshotter = await resolveSnapshotter(deps, ctx, u.snapshotter);
    const done = new Set<string>();
    for (const c of created) {
      const m = await manifestFor(deps, ctx, c.target, u.platform);
      if (!m || done.has(m.digest)) continue;
      done.add(m.digest);
      const man = parseManifest(await readBlob(deps.content, ctx, m.digest));
      const config = parseConfig(await readBlob(deps.content, ctx, man.config.digest));
      await settleAll([unpackLayers(deps, ctx, snapshotter, man.config, config, man.layers.map((l) => ({ desc: l, fetched: Promise.resolve() })), tracker)]);
    }
  }
  emit({ event: ProgressEvents.completedImport });
}

/** The manifest of `d` for `platform`: the best match of an index, or `d` itself when its config matches. */
async function manifestFor(deps: TransferDeps, ctx: CallContext, d: OciDescriptor, platform: Platform): Promise<OciDescriptor | undefined> {
  const match = platformMatcher([platform]);
  if (isIndexType(d.mediaType)) {
    let idx;
    try {
      idx = parseIndex(await readBlob(deps.content, ctx, d.digest));
    } catch (e) {
      if (isNotFound(e)) return undefined;
      throw e;
    }
    const kids = idx.manifests.filter((k) => match(k.platform)).sort((a, b) => platformRank([platform], a.platform) - platformRank([platform], b.platform));
    for (const k of kids) {
      const r = await manifestFor(deps, ctx, k, platform);
      if (r) return r;
    }
    return undefined;
  }
  if (!isManifestType(d.mediaType)) return undefined;
  try {
    const m = parseManifest(await readBlob(deps.content, ctx, d.digest));
    const c = parseConfig(await readBlob(deps.content, ctx, m.config.digest));
    if (c.os && c.architecture && !match({ os: c.os, architecture: c.architecture, variant: c.variant })) return undefined;
    return d;
  } catch (e) {
    if (isNotFound(e)) return undefined;
    throw e;
  }
}

interface DockerManifestEntry {
  Config: string;
  RepoTags?: string[] | null;
  Layers: string[];
}

/** Schema 2 manifests (and their index entries, one per RepoTag) for a docker save archive. */
async function dockerManifests(deps: TransferDeps, ctx: CallContext, kept: Map<string, Buffer>, written: Map<string, Written>, compress: boolean): Promise<OciDescriptor[]> {
  let entries: DockerManifestEntry[];
  try {
    entries = JSON.parse(kept.get("manifest.json")!.toString("utf8"));
    if (!Array.isArray(entries)) throw new Error("not a list");
  } catch (e) {
    throw errInvalidArgument(`invalid docker manifest.json: ${(e as Error).message}`);
  }
  const out: OciDescriptor[] = [];
  for (const e of entries) {
    const cfgPath = String(e.Config ?? "").replace(/^\.\//, "");
    let config: OciDescriptor;
    const cfgKept = kept.get(cfgPath);
    if (cfgKept) config = await writeBytes(deps.content, ctx, `tar-${cfgPath}`, cfgKept);
    else if (written.has(cfgPath)) config = { mediaType: "", digest: written.get(cfgPath)!.digest, size: written.get(cfgPath)!.size };
    else throw errInvalidArgument(`invalid docker archive: config ${JSON.stringify(cfgPath)} not found`);
    config.mediaType = MediaTypes.DockerConfig;
    const layers: OciDescriptor[] = [];
    for (const p of e.Layers ?? []) {
      const w = written.get(String(p).replace(/^\.\//, ""));
      if (!w) throw errInvalidArgument(`invalid docker archive: layer ${JSON.stringify(p)} not found`);
      const mediaType = layerMediaType(w.magic);
      if (compress && mediaType === MediaTypes.DockerLayerTar) {
        // force_compress: store the layer gzip-compressed (the diff ID stays the tar's digest).
        const gz = Readable.from(blobChunks(deps.content, ctx, w.digest)).pipe(zlib.createGzip({ level: 6 }));
        const c = await writeBlob(deps.content, ctx, `compress-${w.digest}`, 0, "", gz as AsyncIterable<Buffer>);
        layers.push({ mediaType: MediaTypes.DockerLayerGzip, digest: c.digest, size: c.size });
      } else {
        layers.push({ mediaType, digest: w.digest, size: w.size });
      }
    }
    const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.DockerManifest, config, layers }));
    const md = { ...(await writeBytes(deps.content, ctx, `tar-manifest-${sha256(manifest).slice(7, 19)}`, manifest)), mediaType: MediaTypes.DockerManifest };
    const tags = (e.RepoTags ?? []).filter(Boolean);
    if (!tags.length) out.push(md);
    for (const t of tags) {
      let full: string;
      try {
        full = formatReference(normalizeReference(t));
      } catch {
        full = t;
      }
      const tag = full.includes("@") ? full.slice(full.indexOf("@")) : full.slice(full.lastIndexOf(":") + 1);
      out.push({ ...md, annotations: { [Annotations.ImageName]: full, [Annotations.RefName]: tag } });
    }
  }
  return out;
}

/** ImageImportStream -> ImageExportStream: the archive bytes copied through. */
export async function copyArchive(src: ImportStreamSpec, dst: ExportStreamSpec, progressFn?: ProgressFn): Promise<void> {
  let n = 0;
  await sendBytes(dst.stream, (async function* () {
    for await (const c of receiveBytes(src.stream)) {
      n += c.length;
      yield c;
    }
  })());
  progressFn?.({ event: ProgressEvents.completedExport, progress: n, total: n });
}
