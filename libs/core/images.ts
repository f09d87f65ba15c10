/**
 * Images: containerd's image records (a name mapped to a target descriptor), as a contract.
 *
 * One interface (`ImageStore`) with two implementations: the local store in the images process
 * (services/images/src/local/images.ts, on LMDB) and `ImageStoreProxy` over gRPC
 * (libs/clients/images.ts). Both pass the same conformance suite (test/images/suite.ts).
 *
 * Every method takes the call context first and requires a namespace (FailedPrecondition without one);
 * images are visible only in their namespace. Errors are errdefs classes, named per method.
 * No runtime dependencies: types, constants and pure helpers only.
 */
import type { CallContext } from "../context";

/** An OCI descriptor as containerd stores an image target: media type, digest, size, annotations. */
export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations: Record<string, string>;
}

export interface Image {
  /** Any non-empty string (usually a reference such as `docker.io/library/busybox:latest`). */
  name: string;
  labels: Record<string, string>;
  target: Descriptor;
  createdAt: Date;
  updatedAt: Date;
}

/** What a caller provides to create or update an image (the store stamps the times). */
export type ImageInput = Pick<Image, "name" | "labels" | "target">;

export interface ImageDeleteOptions {
  /** Return only after a garbage collection that started after the deletion has finished. */
  sync?: boolean;
  /** Delete only while the image still points at this digest (NotFound otherwise). */
  target?: Descriptor;
}

export interface ImageStore {
  /** NotFound when absent. */
  get(ctx: CallContext, name: string): Promise<Image>;
  /** Images matching any of `filters` (fields `name`, `target.digest`, `target.mediatype`, `labels.<k>`, `annotations.<k>`), by name. */
  list(ctx: CallContext, filters?: readonly string[]): Promise<Image[]>;
  /**
   * InvalidArgument for an empty name, a malformed target digest, a size <= 0, an empty media type or
   * oversized labels; AlreadyExists when the name is taken.
   */
  create(ctx: CallContext, image: ImageInput): Promise<Image>;
  /**
   * `paths` are field-mask paths: `labels`, `labels.<k>`, `annotations`, `annotations.<k>`, `target`;
   * none replaces the whole image (name, labels, target). Other paths: InvalidArgument. The result is
   * validated as for create. NotFound when absent.
   */
  update(ctx: CallContext, image: ImageInput, paths?: readonly string[]): Promise<Image>;
  /** NotFound when absent. What only this image referenced becomes collectable. */
  delete(ctx: CallContext, name: string, opts?: ImageDeleteOptions): Promise<void>;
}

export const IMAGE_EVENTS = {
  create: { topic: "/images/create", type: "containerd.services.images.v1.ImageCreate" },
  update: { topic: "/images/update", type: "containerd.services.images.v1.ImageUpdate" },
  delete: { topic: "/images/delete", type: "containerd.services.images.v1.ImageDelete" },
} as const;

const DIGEST_HEX: Record<string, number> = { sha256: 64, sha384: 96, sha512: 128 };

/** go-digest's Digest.Validate, as containerd applies it to image targets; returns the problem, if any. */
export function digestProblem(d: string): string | undefined {
  const i = d.indexOf(":");
  if (i <= 0 || i + 1 === d.length) return "invalid checksum digest format";
  const alg = d.slice(0, i);
  const hex = d.slice(i + 1);
  const len = DIGEST_HEX[alg];
  if (len === undefined) return "unsupported digest algorithm";
  if (hex.length !== len) return "invalid checksum digest length";
  if (!/^[a-f0-9]+$/.test(hex)) return "invalid checksum digest format";
  return undefined;
}
