/**
 * What running a container from a stored image needs, read through the content and image stores (so it
 * works against the gateway): the platform's manifest, the image config's process defaults, and the
 * chain ID of its layers (the name of the unpacked snapshot to prepare the rootfs from).
 */
import * as crypto from "node:crypto";
import type { CallContext } from "../context";
import { errFailedPrecondition, errNotImplemented } from "../errdefs";
import type { ContentStore } from "../core/content";
import type { ImageStore } from "../core/images";

export interface ImageRunConfig {
  name: string;
  /** The unpacked snapshot of the image's layers ("" for an image without layers). */
  chainId: string;
  env: string[];
  entrypoint: string[];
  cmd: string[];
  workingDir: string;
  user: string;
}

const INDEX_TYPES = ["application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json"];
const MANIFEST_TYPES = ["application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json"];

export async function readJson(ctx: CallContext, content: ContentStore, digest: string): Promise<Record<string, unknown>> {
  const ra = await content.readerAt(ctx, digest);
  try {
    const buf = Buffer.alloc(ra.size);
    let pos = 0;
    while (pos < ra.size) {
      const n = await ra.readAt(buf.subarray(pos), pos);
      if (n <= 0) throw errFailedPrecondition(`short read of ${digest}`);
      pos += n;
    }
    return JSON.parse(buf.toString("utf8")) as Record<string, unknown>;
  } finally {
    await ra.close();
  }
}

/** The OCI chain ID of a list of layer diff IDs. */
export function chainId(diffIds: readonly string[]): string {
  let chain = "";
  for (const d of diffIds) chain = chain ? "sha256:" + crypto.createHash("sha256").update(`${chain} ${d}`).digest("hex") : d;
  return chain;
}

export function hostArch(): string {
  return ({ x64: "amd64", arm64: "arm64", arm: "arm", ia32: "386", ppc64: "ppc64le", s390x: "s390x", riscv64: "riscv64" } as Record<string, string>)[process.arch] ?? process.arch;
}

export async function resolveImage(ctx: CallContext, images: ImageStore, content: ContentStore, name: string): Promise<ImageRunConfig> {
  const img = await images.get(ctx, name);
  let desc = { mediaType: img.target.mediaType, digest: img.target.digest };
  for (let depth = 0; depth < 4 && INDEX_TYPES.includes(desc.mediaType); depth++) {
    const idx = await readJson(ctx, content, desc.digest);
    const ms = (idx.manifests as { mediaType: string; digest: string; platform?: { os?: string; architecture?: string } }[] | undefined) ?? [];
    const m = ms.find((x) => x.platform?.os === "linux" && x.platform?.architecture === hostArch()) ?? (ms.length === 1 ? ms[0] : undefined);
    if (!m) throw errNotImplemented(`image ${JSON.stringify(name)} has no manifest for linux/${hostArch()}`);
    desc = { mediaType: m.mediaType, digest: m.digest };
  }
  if (!MANIFEST_TYPES.includes(desc.mediaType)) throw errNotImplemented(`image ${JSON.stringify(name)}: unsupported media type ${desc.mediaType}`);
  const manifest = await readJson(ctx, content, desc.digest);
  const cfgDigest = (manifest.config as { digest?: string } | undefined)?.digest;
  if (!cfgDigest) throw errFailedPrecondition(`image ${JSON.stringify(name)}: manifest without config`);
  const cfg = await readJson(ctx, content, cfgDigest);
  const c = (cfg.config as Record<string, unknown> | undefined) ?? {};
  const diffIds = ((cfg.rootfs as { diff_ids?: string[] } | undefined)?.diff_ids) ?? [];
  const list = (v: unknown): string[] => (Array.isArray(v) ? v.map(String) : []);
  return {
    name,
    chainId: chainId(diffIds),
    env: list(c.Env),
    entrypoint: list(c.Entrypoint),
    cmd: list(c.Cmd),
    workingDir: typeof c.WorkingDir === "string" ? c.WorkingDir : "",
    user: typeof c.User === "string" ? c.User : "",
  };
}
