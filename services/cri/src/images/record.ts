/**
 * The CRI's view of an image, as containerd's CRI shapes it from the image records of the `k8s.io`
 * namespace: one image per config digest (its id, `sha256:...`), with every record name pointing at it
 * as a reference (`docker.io/library/busybox:1.28`, `docker.io/library/busybox@sha256:...`, and the id
 * itself). RepoTags and RepoDigests come from those names; uid/username from the config's `User`;
 * the size is what the image's blobs for this platform weigh (index, manifest, config, layers).
 */
import { parseReference } from "#libs/registry/reference";
import type { Descriptor } from "#libs/core/images";

/** The labels containerd's CRI puts on the image records it creates. */
export const IMAGE_LABEL_KEY = "io.cri-containerd.image";
export const IMAGE_LABEL_VALUE = "managed";
export const PINNED_LABEL_KEY = "io.cri-containerd.pinned";
export const PINNED_LABEL_VALUE = "pinned";

/** The OCI image config (image-spec's `Image`), as stored. */
export interface ImageSpec {
  created?: string;
  author?: string;
  architecture?: string;
  os?: string;
  variant?: string;
  config?: {
    User?: string;
    ExposedPorts?: Record<string, unknown>;
    Env?: string[];
    Entrypoint?: string[];
    Cmd?: string[];
    Volumes?: Record<string, unknown>;
    WorkingDir?: string;
    Labels?: Record<string, string>;
    StopSignal?: string;
    ArgsEscaped?: boolean;
  };
  rootfs?: { type?: string; diff_ids?: string[] };
  history?: unknown[];
  [k: string]: unknown;
}

export interface CriImage {
  /** `sha256:<config digest>`. */
  id: string;
  /** Every record name resolving to this image, tags first (containerd's order). */
  references: string[];
  /** The chain ID of the layers: the name of the unpacked snapshot a container's rootfs starts from. */
  chainId: string;
  /** Bytes of the image's blobs for this platform. */
  size: number;
  spec: ImageSpec;
  /** The target of the first reference (index or manifest). */
  target: Descriptor;
  /** The platform manifest's config descriptor. */
  config: Descriptor;
  pinned: boolean;
}

/** containerd's rank of a reference: name:tag@digest, name:tag, name@digest, name, anything else. */
function refRank(ref: string): number {
  let r;
  try {
    r = parseReference(ref);
  } catch {
    return 5;
  }
  if (r.tag && r.digest) return 1;
  if (r.tag) return 2;
  if (r.digest) return 3;
  return 4;
}

/** containerd's sortReferences: by rank, then by name. */
export function sortReferences(refs: Iterable<string>): string[] {
  return [...new Set(refs)].sort((a, b) => refRank(a) - refRank(b) || (a < b ? -1 : a > b ? 1 : 0));
}

/** RepoTags (names with a tag) and RepoDigests (names with a digest) of a list of references; ids and bad names are neither. */
export function repoTagsAndDigests(refs: readonly string[]): { repoTags: string[]; repoDigests: string[] } {
  const repoTags: string[] = [];
  const repoDigests: string[] = [];
  for (const ref of refs) {
    let r;
    try {
      r = parseReference(ref);
    } catch {
      continue;
    }
    if (r.digest) repoDigests.push(ref);
    else if (r.tag) repoTags.push(ref);
  }
  return { repoTags, repoDigests };
}

/** The image's user as the CRI reports it: a numeric user is a uid, a name is a username (the group is dropped). */
export function userOf(user: string | undefined): { uid?: number; username: string } {
  if (!user) return { username: "" };
  const u = user.split(":")[0]!;
  if (/^-?\d+$/.test(u)) return { uid: Number(u), username: "" };
  return { username: u };
}

/** The CRI `Image` message of a record (runtime.v1.Image). */
export function toCriImage(rec: CriImage): {
  id: string; repo_tags: string[]; repo_digests: string[]; size: number; uid?: { value: number }; username: string; spec: { image: string; annotations: Record<string, string> }; pinned: boolean;
} {
  const { repoTags, repoDigests } = repoTagsAndDigests(rec.references);
  const { uid, username } = userOf(rec.spec.config?.User);
  return {
    id: rec.id,
    repo_tags: repoTags,
    repo_digests: repoDigests,
    size: rec.size,
    ...(uid !== undefined ? { uid: { value: uid } } : {}),
    username,
    spec: { image: rec.id, annotations: {} },
    pinned: rec.pinned,
  };
}

/** ImageStatus's verbose `info`: `{"chainID": ..., "imageSpec": <config>}` under the key "info". */
export function verboseInfo(rec: CriImage): Record<string, string> {
  return { info: JSON.stringify({ chainID: rec.chainId, imageSpec: rec.spec }) };
}

/** The repo tag and repo digest a pull by `ref` records (containerd's getRepoDigestAndTag). */
export function pulledNames(ref: string, manifestDigest: string): { repoTag: string; repoDigest: string } {
  const r = parseReference(ref);
  const name = `${r.domain}/${r.path}`;
  return {
    repoTag: r.tag ? `${name}:${r.tag}` : "",
    repoDigest: r.digest ? ref : `${name}@${manifestDigest}`,
  };
}
