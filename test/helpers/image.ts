/**
 * OCI images built by the tests themselves: a gzip'd tar layer holding busybox-static (/bin/busybox) and
 * applet symlinks, an image config, a manifest and (optionally) an index, plus `pushImage` to publish
 * them to a registry (see registry.ts). Everything is deterministic: the same options give the same
 * digests.
 */
import * as fs from "node:fs";
import * as zlib from "node:zlib";
import { pushBlob, pushManifest, sha256, type Registry } from "./registry";

export const MEDIA_TYPES = {
  index: "application/vnd.oci.image.index.v1+json",
  manifest: "application/vnd.oci.image.manifest.v1+json",
  config: "application/vnd.oci.image.config.v1+json",
  layerGzip: "application/vnd.oci.image.layer.v1.tar+gzip",
} as const;

export const BUSYBOX = "/bin/busybox";

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  platform?: { architecture: string; os: string; variant?: string };
  annotations?: Record<string, string>;
}

export interface TarEntry {
  path: string;
  type: "file" | "dir" | "symlink";
  mode?: number;
  data?: Buffer;
  linkname?: string;
}

function octal(n: number, width: number): string {
  return n.toString(8).padStart(width - 1, "0") + "\0";
}

/** A ustar archive of `entries` (owner root, mtime 0), ending with the two zero blocks. */
export function tar(entries: TarEntry[]): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    const name = e.type === "dir" && !e.path.endsWith("/") ? e.path + "/" : e.path;
    if (Buffer.byteLength(name) > 100) throw new Error(`tar: name too long: ${name}`);
    const data = e.type === "file" ? (e.data ?? Buffer.alloc(0)) : Buffer.alloc(0);
    const h = Buffer.alloc(512);
    h.write(name, 0, 100, "utf8");
    h.write(octal(e.mode ?? (e.type === "dir" ? 0o755 : e.type === "symlink" ? 0o777 : 0o644), 8), 100, "ascii");
    h.write(octal(0, 8), 108, "ascii"); // uid
    h.write(octal(0, 8), 116, "ascii"); // gid
    h.write(octal(data.length, 12), 124, "ascii");
    h.write(octal(0, 12), 136, "ascii"); // mtime
    h.fill(0x20, 148, 156); // checksum field counts as spaces
    h.write(e.type === "file" ? "0" : e.type === "symlink" ? "2" : "5", 156, "ascii");
    if (e.linkname) h.write(e.linkname, 157, 100, "utf8");
    h.write("ustar\u000000", 257, "ascii");
    h.write("root", 265, "ascii");
    h.write("root", 297, "ascii");
    let sum = 0;
    for (const b of h) sum += b;
    h.write(sum.toString(8).padStart(6, "0") + "\0 ", 148, "ascii");
    parts.push(h, data);
    const pad = (512 - (data.length % 512)) % 512;
    if (pad) parts.push(Buffer.alloc(pad));
  }
  parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}

export interface Blob {
  descriptor: Descriptor;
  data: Buffer;
}

export interface BuiltImage {
  /** The descriptor a reference resolves to: the index when there is one, else the manifest. */
  target: Descriptor;
  index?: Blob;
  manifest: Blob;
  config: Blob;
  layer: Blob & { diffID: string; uncompressed: Buffer };
  /** Manifests (and configs) for the other platforms of the index. */
  others?: { manifest: Blob; config: Blob }[];
  /** Every blob by digest (index, manifests, configs, layer). */
  blobs: Map<string, Buffer>;
}

export function hostPlatform(): { architecture: string; os: string } {
  const arch = ({ x64: "amd64", arm64: "arm64", arm: "arm", ia32: "386", ppc64: "ppc64le", s390x: "s390x", riscv64: "riscv64" } as Record<string, string>)[process.arch] ?? process.arch;
  return { architecture: arch, os: "linux" };
}

const json = (v: unknown): Buffer => Buffer.from(JSON.stringify(v));

function blob(mediaType: string, data: Buffer, extra: Partial<Descriptor> = {}): Blob {
  return { descriptor: { mediaType, digest: sha256(data), size: data.length, ...extra }, data };
}

export interface BuildOptions {
  /** Applets linked to busybox in /bin (default: sh, ls, cat, echo, true, sleep). */
  applets?: string[];
  /** Wrap the manifest in an index (default true); `otherPlatforms` adds a manifest per platform (same layer). */
  index?: boolean;
  otherPlatforms?: { architecture: string; os: string; variant?: string }[];
  /** Extra files in the layer, e.g. to make distinct images. */
  extraFiles?: TarEntry[];
  /** Keys of the image config's `config` (User, Cmd, Labels, ...) over the defaults: another image on the same layer. */
  config?: Record<string, unknown>;
}

/** An OCI image of busybox-static for the host platform. */
export function buildBusyboxImage(opts: BuildOptions = {}): BuiltImage {
  const busybox = fs.readFileSync(BUSYBOX);
  const applets = opts.applets ?? ["sh", "ls", "cat", "echo", "true", "sleep"];
  const entries: TarEntry[] = [
    { path: "bin", type: "dir" },
    { path: "bin/busybox", type: "file", mode: 0o755, data: busybox },
    ...applets.map((a): TarEntry => ({ path: `bin/${a}`, type: "symlink", linkname: "busybox" })),
    { path: "etc", type: "dir" },
    { path: "etc/group", type: "file", data: Buffer.from("root:x:0:\n") },
    { path: "etc/passwd", type: "file", data: Buffer.from("root:x:0:0:root:/:/bin/sh\n") },
    { path: "tmp", type: "dir", mode: 0o1777 },
    ...(opts.extraFiles ?? []),
  ];
  const uncompressed = tar(entries);
  const diffID = sha256(uncompressed);
  const layer = { ...blob(MEDIA_TYPES.layerGzip, zlib.gzipSync(uncompressed, { level: 6 })), diffID, uncompressed };
  const platform = hostPlatform();
  const config = blob(MEDIA_TYPES.config, json({
    created: "1970-01-01T00:00:00Z",
    architecture: platform.architecture,
    os: platform.os,
    config: { Env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], Cmd: ["/bin/sh"], ...opts.config },
    rootfs: { type: "layers", diff_ids: [diffID] },
    history: [{ created: "1970-01-01T00:00:00Z", created_by: "flotilla test image builder" }],
  }));
  const manifest = blob(MEDIA_TYPES.manifest, json({
    schemaVersion: 2,
    mediaType: MEDIA_TYPES.manifest,
    config: config.descriptor,
    layers: [layer.descriptor],
  }));
  const blobs = new Map<string, Buffer>([[layer.descriptor.digest, layer.data], [config.descriptor.digest, config.data], [manifest.descriptor.digest, manifest.data]]);
  if (opts.index === false) return { target: manifest.descriptor, manifest, config, layer, blobs };
  // Other platforms: real manifests (a registry checks an index's references) with their own config.
  const others: BuiltImage["others"] = (opts.otherPlatforms ?? []).map((p) => {
    const c = blob(MEDIA_TYPES.config, json({ ...JSON.parse(config.data.toString()), architecture: p.architecture, os: p.os, ...(p.variant ? { variant: p.variant } : {}) }));
    const m = blob(MEDIA_TYPES.manifest, json({ schemaVersion: 2, mediaType: MEDIA_TYPES.manifest, config: c.descriptor, layers: [layer.descriptor] }));
    blobs.set(c.descriptor.digest, c.data);
    blobs.set(m.descriptor.digest, m.data);
    return { manifest: { ...m, descriptor: { ...m.descriptor, platform: p } }, config: c };
  });
  const index = blob(MEDIA_TYPES.index, json({
    schemaVersion: 2,
    mediaType: MEDIA_TYPES.index,
    manifests: [{ ...manifest.descriptor, platform }, ...others.map((o) => o.manifest.descriptor)],
  }));
  blobs.set(index.descriptor.digest, index.data);
  return { target: index.descriptor, index, manifest, config, layer, blobs, others };
}

/**
 * Publish `img` as `<repo>:<tag>`: the layer and config blobs, the manifest by digest, then the index
 * (or the manifest) under the tag, after the other platforms' configs and manifests.
 */
export async function pushImage(reg: Registry, repo: string, tag: string, img: BuiltImage): Promise<void> {
  await pushBlob(reg, repo, img.layer.data);
  await pushBlob(reg, repo, img.config.data);
  await pushManifest(reg, repo, img.manifest.descriptor.digest, MEDIA_TYPES.manifest, img.manifest.data);
  for (const o of img.others ?? []) {
    await pushBlob(reg, repo, o.config.data);
    await pushManifest(reg, repo, o.manifest.descriptor.digest, MEDIA_TYPES.manifest, o.manifest.data);
  }
  if (img.index) await pushManifest(reg, repo, tag, MEDIA_TYPES.index, img.index.data);
  else await pushManifest(reg, repo, tag, MEDIA_TYPES.manifest, img.manifest.data);
}
