/** Test images built here: busybox-static layers, random-data layers, OCI/Docker manifests, an index; pushed with the registry client. */
import * as fs from "node:fs";
import * as zlib from "node:zlib";
import { Readable } from "node:stream";
import { randomBytes } from "node:crypto";
import { MediaTypes, sha256, type OciDescriptor } from "#libs/oci";
import { RegistryClient, type CredentialsFn } from "#libs/registry";
import { TAR_END, tarFile, tarHeader } from "#services/transfer/src/local/tar";

export interface Blob {
  desc: OciDescriptor;
  bytes: Buffer;
}

export interface BuiltImage {
  manifest: Blob;
  config: Blob;
  layers: (Blob & { diffId: string })[];
  index?: Blob;
  /** With an index: a second platform's manifest and config (linux/arm64, same layers). */
  other?: { manifest: Blob; config: Blob };
  /** The root: index when present, else manifest. */
  root: Blob;
}

const dir = (name: string): Buffer => tarHeader({ name, size: 0, type: "directory", mode: 0o755 });

/** A layer with /bin/busybox (static) and a few applets as symlinks. */
export function busyboxLayer(): Buffer {
  const bb = fs.readFileSync("/bin/busybox");
  const parts = [dir("bin/"), tarFile("bin/busybox", bb, { mode: 0o755 })];
  for (const a of ["sh", "ls", "cat", "echo", "true", "sleep"]) parts.push(tarHeader({ name: `bin/${a}`, size: 0, type: "symlink", linkname: "busybox", mode: 0o777 }));
  parts.push(TAR_END);
  return Buffer.concat(parts);
}

/** A layer of `files` files of `size` random bytes each under `prefix/`, plus a marker file. */
export function dataLayer(prefix: string, files: number, size: number, marker = `${prefix}\n`): Buffer {
  const parts = [dir(`${prefix}/`)];
  for (let i = 0; i < files; i++) parts.push(tarFile(`${prefix}/f${i}`, randomBytes(size)));
  parts.push(dir("etc/"), tarFile(`etc/${prefix}.txt`, Buffer.from(marker)));
  parts.push(TAR_END);
  return Buffer.concat(parts);
}

function blob(mediaType: string, bytes: Buffer): Blob {
  return { desc: { mediaType, digest: sha256(bytes), size: bytes.length }, bytes };
}

export function buildImage(tars: Buffer[], opts: { docker?: boolean; gzip?: boolean; platform?: { os: string; architecture: string }; index?: boolean; cmd?: string[] } = {}): BuiltImage {
  const gz = opts.gzip ?? true;
  const docker = !!opts.docker;
  const layerType = docker ? (gz ? MediaTypes.DockerLayerGzip : MediaTypes.DockerLayerTar) : gz ? MediaTypes.OciLayerGzip : MediaTypes.OciLayerTar;
  const layers = tars.map((t) => ({ ...blob(layerType, gz ? zlib.gzipSync(t, { level: 1 }) : t), diffId: sha256(t) }));
  const platform = opts.platform ?? { os: "linux", architecture: "amd64" };
  const config = blob(docker ? MediaTypes.DockerConfig : MediaTypes.OciConfig, Buffer.from(JSON.stringify({
    architecture: platform.architecture, os: platform.os, created: "2024-01-01T00:00:00Z",
    config: { Cmd: opts.cmd ?? ["/bin/sh"], Env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"] },
    rootfs: { type: "layers", diff_ids: layers.map((l) => l.diffId) },
  })));
  const manifest = blob(docker ? MediaTypes.DockerManifest : MediaTypes.OciManifest, Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: docker ? MediaTypes.DockerManifest : MediaTypes.OciManifest,
    config: config.desc, layers: layers.map((l) => l.desc),
  })));
  let index: Blob | undefined;
  let other: { manifest: Blob; config: Blob } | undefined;
  if (opts.index) {
    const oc = blob(config.desc.mediaType, Buffer.from(config.bytes.toString().replace(`"architecture":"${platform.architecture}"`, '"architecture":"arm64"')));
    const om = blob(manifest.desc.mediaType, Buffer.from(manifest.bytes.toString().replace(config.desc.digest, oc.desc.digest).replace(`"size":${config.desc.size},`, `"size":${oc.desc.size},`)));
    other = { manifest: om, config: oc };
    index = blob(docker ? MediaTypes.DockerManifestList : MediaTypes.OciIndex, Buffer.from(JSON.stringify({
      schemaVersion: 2, mediaType: docker ? MediaTypes.DockerManifestList : MediaTypes.OciIndex,
      manifests: [{ ...manifest.desc, platform }, { ...om.desc, platform: { os: "linux", architecture: "arm64", variant: "v8" } }],
    })));
  }
  return { manifest, config, layers, ...(index ? { index, other } : {}), root: index ?? manifest };
}

/** Every blob of the image (the index's foreign-platform manifest is not included). */
export function blobsOf(img: BuiltImage): Blob[] {
  return [...img.layers, img.config, img.manifest, ...(img.index ? [img.index] : [])];
}

/** Push with Flotilla's registry client (blobs, then manifest by digest, then the root by tag). */
export async function pushImage(host: string, repo: string, tag: string, img: BuiltImage, credentials?: CredentialsFn): Promise<string> {
  const ref = `${host}/${repo}:${tag}`;
  const c = new RegistryClient({ reference: ref, credentials });
  for (const b of [...img.layers, img.config, ...(img.other ? [img.other.config] : [])]) {
    if (!(await c.exists(b.desc))) await c.pushBlob(b.desc, () => Readable.from([b.bytes]));
  }
  if (img.index) {
    await c.pushManifest(img.manifest.desc, img.manifest.bytes, img.manifest.desc.digest);
    await c.pushManifest(img.other!.manifest.desc, img.other!.manifest.bytes, img.other!.manifest.desc.digest);
    await c.pushManifest(img.index.desc, img.index.bytes, tag);
  } else {
    await c.pushManifest(img.manifest.desc, img.manifest.bytes, tag);
  }
  return ref;
}
