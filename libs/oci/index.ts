/**
 * OCI image model helpers shared by whoever walks images: media types, descriptors, the children of
 * an index or manifest, containerd's GC reference labels, content ref keys, chain IDs and platforms.
 * Pure functions only (node:crypto for chain IDs); no I/O.
 */
import { createHash } from "node:crypto";

export const MediaTypes = {
  OciIndex: "application/vnd.oci.image.index.v1+json",
  OciManifest: "application/vnd.oci.image.manifest.v1+json",
  OciConfig: "application/vnd.oci.image.config.v1+json",
  OciLayerTar: "application/vnd.oci.image.layer.v1.tar",
  OciLayerGzip: "application/vnd.oci.image.layer.v1.tar+gzip",
  OciLayerZstd: "application/vnd.oci.image.layer.v1.tar+zstd",
  DockerManifestList: "application/vnd.docker.distribution.manifest.list.v2+json",
  DockerManifest: "application/vnd.docker.distribution.manifest.v2+json",
  DockerConfig: "application/vnd.docker.container.image.v1+json",
  DockerLayerTar: "application/vnd.docker.image.rootfs.diff.tar",
  DockerLayerGzip: "application/vnd.docker.image.rootfs.diff.tar.gzip",
  DockerSchema1Manifest: "application/vnd.docker.distribution.manifest.v1+prettyjws",
  DockerSchema1ManifestUnsigned: "application/vnd.docker.distribution.manifest.v1+json",
  InTotoJson: "application/vnd.in-toto+json",
} as const;

export const Annotations = {
  RefName: "org.opencontainers.image.ref.name",
  ImageName: "io.containerd.image.name",
} as const;

export const Labels = {
  gcRefContent: "containerd.io/gc.ref.content",
  gcRefSnapshotPrefix: "containerd.io/gc.ref.snapshot.",
  gcExpire: "containerd.io/gc.expire",
  uncompressed: "containerd.io/uncompressed",
  distributionSourcePrefix: "containerd.io/distribution.source.",
} as const;

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
  osVersion?: string;
  osFeatures?: string[];
}

export interface OciDescriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
  platform?: Platform;
  urls?: string[];
}

export interface OciIndex {
  schemaVersion: number;
  mediaType?: string;
  manifests: OciDescriptor[];
  annotations?: Record<string, string>;
}

export interface OciManifest {
  schemaVersion: number;
  mediaType?: string;
  config: OciDescriptor;
  layers: OciDescriptor[];
  annotations?: Record<string, string>;
}

export interface ImageConfig {
  architecture?: string;
  os?: string;
  variant?: string;
  rootfs?: { type?: string; diff_ids?: string[] };
}

export const isIndexType = (mt: string): boolean => mt === MediaTypes.OciIndex || mt === MediaTypes.DockerManifestList;
export const isManifestType = (mt: string): boolean => mt === MediaTypes.OciManifest || mt === MediaTypes.DockerManifest;
export const isSchema1 = (mt: string): boolean => mt === MediaTypes.DockerSchema1Manifest || mt === MediaTypes.DockerSchema1ManifestUnsigned;
export const isConfigType = (mt: string): boolean => mt === MediaTypes.OciConfig || mt === MediaTypes.DockerConfig;

/** containerd's images.IsLayerType: OCI and Docker layer media types, with any +suffix. */
export function isLayerType(mt: string): boolean {
  if (mt.startsWith("application/vnd.oci.image.layer.") || mt.startsWith("application/vnd.docker.image.rootfs.")) return true;
  return false;
}

/** Distributable layers only (non-distributable and foreign layers are skipped by push and export when asked). */
export function isNonDistributable(mt: string): boolean {
  return mt.includes(".nondistributable.") || mt.includes(".foreign.");
}

/** containerd's remotes.MakeRefKey: the ingest ref a fetched descriptor is written under. */
export function refKey(desc: Pick<OciDescriptor, "mediaType" | "digest" | "annotations">): string {
  const name = desc.annotations?.[Annotations.RefName];
  const key = name ? `${name}@${desc.digest}` : desc.digest;
  const mt = desc.mediaType;
  if (isManifestType(mt)) return `manifest-${key}`;
  if (isIndexType(mt)) return `index-${key}`;
  if (isLayerType(mt)) return `layer-${key}`;
  if (isConfigType(mt)) return `config-${key}`;
  return `unknown-${key}`;
}

/** containerd's images.ChildGCLabels: the label key prefix a child of this media type gets. */
export function childGCLabelKey(mt: string): string {
  if (isConfigType(mt)) return `${Labels.gcRefContent}.config`;
  if (isManifestType(mt)) return `${Labels.gcRefContent}.m.`;
  if (isLayerType(mt)) return `${Labels.gcRefContent}.l.`;
  return `${Labels.gcRefContent}.`;
}

/** containerd's SetChildrenMappedLabels: the labels a parent gets for its children (keys numbered per prefix). */
export function childrenLabels(children: readonly Pick<OciDescriptor, "mediaType" | "digest">[]): Record<string, string> {
  const counts = new Map<string, number>();
  const out: Record<string, string> = {};
  for (const ch of children) {
    let key = childGCLabelKey(ch.mediaType);
    const idx = counts.get(key) ?? 0;
    counts.set(key, idx + 1);
    if (idx > 0 || key.endsWith(".")) key = `${key}${idx}`;
    out[key] = ch.digest;
  }
  return out;
}

export class OciFormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "OciFormatError";
  }
}

function asDescriptor(v: unknown, where: string): OciDescriptor {
  const d = v as Record<string, unknown> | null;
  if (!d || typeof d !== "object") throw new OciFormatError(`${where}: not a descriptor`);
  if (typeof d.digest !== "string" || !/^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/.test(d.digest)) throw new OciFormatError(`${where}: invalid digest`);
  const size = Number(d.size);
  if (!Number.isSafeInteger(size) || size < 0) throw new OciFormatError(`${where}: invalid size`);
  const out: OciDescriptor = { mediaType: typeof d.mediaType === "string" ? d.mediaType : "", digest: d.digest, size };
  if (d.annotations && typeof d.annotations === "object") out.annotations = { ...(d.annotations as Record<string, string>) };
  if (d.platform && typeof d.platform === "object") {
    const p = d.platform as Record<string, unknown>;
    out.platform = {
      os: String(p.os ?? ""),
      architecture: String(p.architecture ?? ""),
      ...(p.variant ? { variant: String(p.variant) } : {}),
      ...(p["os.version"] ? { osVersion: String(p["os.version"]) } : {}),
      ...(Array.isArray(p["os.features"]) ? { osFeatures: (p["os.features"] as unknown[]).map(String) } : {}),
    };
  }
  if (Array.isArray(d.urls)) out.urls = d.urls.map(String);
  return out;
}

function parseJson(bytes: Uint8Array, what: string): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(Buffer.from(bytes).toString("utf8"));
  } catch (e) {
    throw new OciFormatError(`${what}: invalid JSON: ${(e as Error).message}`);
  }
  if (!v || typeof v !== "object" || Array.isArray(v)) throw new OciFormatError(`${what}: not a JSON object`);
  return v as Record<string, unknown>;
}

export function parseIndex(bytes: Uint8Array): OciIndex {
  const j = parseJson(bytes, "index");
  if (!Array.isArray(j.manifests)) throw new OciFormatError("index: manifests missing");
  return {
    schemaVersion: Number(j.schemaVersion ?? 2),
    ...(typeof j.mediaType === "string" ? { mediaType: j.mediaType } : {}),
    manifests: j.manifests.map((m, i) => asDescriptor(m, `index manifests[${i}]`)),
    ...(j.annotations ? { annotations: j.annotations as Record<string, string> } : {}),
  };
}

export function parseManifest(bytes: Uint8Array): OciManifest {
  const j = parseJson(bytes, "manifest");
  if (!j.config) throw new OciFormatError("manifest: config missing");
  if (!Array.isArray(j.layers)) throw new OciFormatError("manifest: layers missing");
  return {
    schemaVersion: Number(j.schemaVersion ?? 2),
    ...(typeof j.mediaType === "string" ? { mediaType: j.mediaType } : {}),
    config: asDescriptor(j.config, "manifest config"),
    layers: j.layers.map((l, i) => asDescriptor(l, `manifest layers[${i}]`)),
    ...(j.annotations ? { annotations: j.annotations as Record<string, string> } : {}),
  };
}

export function parseConfig(bytes: Uint8Array): ImageConfig {
  const j = parseJson(bytes, "image config") as ImageConfig;
  const diffIds = j.rootfs?.diff_ids;
  if (diffIds !== undefined && (!Array.isArray(diffIds) || diffIds.some((d) => typeof d !== "string"))) throw new OciFormatError("image config: invalid rootfs.diff_ids");
  return j;
}

/** The children of an index or manifest blob (containerd's images.Children); others have none. */
export function children(desc: Pick<OciDescriptor, "mediaType">, bytes: Uint8Array): OciDescriptor[] {
  if (isIndexType(desc.mediaType)) return parseIndex(bytes).manifests;
  if (isManifestType(desc.mediaType)) {
    const m = parseManifest(bytes);
    return [m.config, ...m.layers];
  }
  return [];
}

export function sha256(data: Uint8Array | string): string {
  return "sha256:" + createHash("sha256").update(data).digest("hex");
}

/** identity.ChainIDs: chain[0] = diff[0]; chain[i] = sha256(chain[i-1] + " " + diff[i]). */
export function chainIds(diffIds: readonly string[]): string[] {
  const out: string[] = [];
  for (const d of diffIds) out.push(out.length === 0 ? d : sha256(`${out[out.length - 1]} ${d}`));
  return out;
}

// ---- platforms ----

const ARCH_ALIASES: Record<string, [string, string?]> = {
  x86_64: ["amd64"], "x86-64": ["amd64"], amd64: ["amd64"],
  aarch64: ["arm64"], arm64: ["arm64"],
  armhf: ["arm", "v7"], armel: ["arm", "v6"], arm: ["arm"],
  i386: ["386"], i686: ["386"], "386": ["386"],
};

/** containerd's platforms.Normalize. */
export function normalizePlatform(p: Platform): Platform {
  const os = (p.os || "").toLowerCase();
  const raw = (p.architecture || "").toLowerCase();
  const [arch, impliedVariant] = ARCH_ALIASES[raw] ?? [raw];
  let variant = (p.variant || impliedVariant || "").toLowerCase();
  if (arch === "arm64" && (variant === "8" || variant === "v8")) variant = "";
  if (arch === "amd64" && variant === "v1") variant = "";
  if (arch === "arm" && /^[0-9]$/.test(variant)) variant = "v" + variant;
  if (arch === "arm" && !variant) variant = "v7";
  return { os: os === "macos" ? "darwin" : os, architecture: arch, ...(variant ? { variant } : {}), ...(p.osVersion ? { osVersion: p.osVersion } : {}) };
}

export function hostPlatform(): Platform {
  const arch = ({ x64: "amd64", arm64: "arm64", arm: "arm", ia32: "386", ppc64: "ppc64le", s390x: "s390x", riscv64: "riscv64" } as Record<string, string>)[process.arch] ?? process.arch;
  return normalizePlatform({ os: process.platform, architecture: arch });
}

export function formatPlatform(p: Platform): string {
  return [p.os || "unknown", p.architecture || "unknown", p.variant].filter(Boolean).join("/");
}

/** containerd's platforms.Parse for `os/arch[/variant]`, `os` or `arch` alone. */
export function parsePlatform(s: string): Platform {
  const parts = s.split("/");
  if (parts.length === 1) {
    const x = parts[0]!.toLowerCase();
    if (["linux", "windows", "darwin", "freebsd"].includes(x)) return normalizePlatform({ os: x, architecture: hostPlatform().architecture });
    return normalizePlatform({ os: "linux", architecture: x });
  }
  return normalizePlatform({ os: parts[0]!, architecture: parts[1]!, variant: parts[2] });
}

/** A platform matcher: `only(p)` semantics (arm variants accept lower ones; arm64 accepts arm v8 manifests is not done). */
export function platformMatcher(wanted: readonly Platform[]): (p: Platform | undefined) => boolean {
  const ws = wanted.map(normalizePlatform);
  return (p) => {
    if (!p) return true;
    const n = normalizePlatform(p);
    return ws.some((w) => {
      if (w.os !== n.os || w.architecture !== n.architecture) return false;
      if ((w.variant ?? "") === (n.variant ?? "")) return true;
      if (w.architecture === "arm" && w.variant && n.variant) return n.variant <= w.variant;
      return false;
    });
  };
}

/** Rank of `p` for the wanted list (lower is better), for picking one manifest per platform. */
export function platformRank(wanted: readonly Platform[], p: Platform | undefined): number {
  if (!p) return wanted.length;
  const m = wanted.findIndex((w) => platformMatcher([w])(p));
  return m < 0 ? Number.MAX_SAFE_INTEGER : m;
}
