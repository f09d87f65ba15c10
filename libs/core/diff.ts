/**
 * Diff: applying layers onto mounts (containerd's diff.Applier) and computing layers from two mount
 * sets (diff.Comparer). The local implementation lives in the snapshots process
 * (services/snapshots/src/local/diff); `DiffProxy` (libs/clients/diff.ts) implements both over gRPC.
 *
 * No runtime dependencies: types, constants and pure helpers only.
 */
import type { CallContext } from "../context";
import type { Mount } from "./snapshots";

/** An OCI content descriptor. */
export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
}

/** An opaque processor payload (containerd's `payloads` map of Any), passed through untouched. */
export interface AnyPayload {
  typeUrl: string;
  value: Uint8Array;
}

export interface ApplyOptions {
  payloads?: Record<string, AnyPayload>;
  /** Sync the filesystem after applying. */
  syncFs?: boolean;
}

export interface Applier {
  /**
   * Apply the layer `desc` (read from the content store) onto `mounts` and return the descriptor of
   * the uncompressed layer (`mediaType` tar, `digest` = the diff ID, `size` = uncompressed bytes).
   * The compressed digest and size are verified. A hostile or malformed layer is InvalidArgument and
   * leaves the target untouched; NotFound when the blob is missing; NotImplemented for a media type
   * this applier does not handle.
   */
  apply(ctx: CallContext, desc: Descriptor, mounts: Mount[], opts?: ApplyOptions): Promise<Descriptor>;
}

export interface DiffOptions {
  /** Layer media type to produce; default tar+gzip. */
  mediaType?: string;
  /** Content ingest ref; a unique one when empty. */
  ref?: string;
  /** Labels for the committed blob (`containerd.io/uncompressed` is always added). */
  labels?: Record<string, string>;
  /** Clamp every timestamp in the layer to this time (reproducible builds). */
  sourceDateEpoch?: Date;
}

export interface Comparer {
  /**
   * Compute the changes from `lower` to `upper` as an OCI layer, write it to the content store and
   * return its descriptor. NotImplemented for an unsupported media type.
   */
  compare(ctx: CallContext, lower: Mount[], upper: Mount[], opts?: DiffOptions): Promise<Descriptor>;
}

export const LayerMediaTypes = {
  OciTar: "application/vnd.oci.image.layer.v1.tar",
  OciTarGzip: "application/vnd.oci.image.layer.v1.tar+gzip",
  OciTarZstd: "application/vnd.oci.image.layer.v1.tar+zstd",
  OciNonDistTar: "application/vnd.oci.image.layer.nondistributable.v1.tar",
  OciNonDistTarGzip: "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
  OciNonDistTarZstd: "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
  DockerTar: "application/vnd.docker.image.rootfs.diff.tar",
  DockerTarGzip: "application/vnd.docker.image.rootfs.diff.tar.gzip",
  DockerTarZstd: "application/vnd.docker.image.rootfs.diff.tar.zstd",
  DockerForeignTarGzip: "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
} as const;

export type LayerCompression = "none" | "gzip" | "zstd";

/** The compression a layer media type declares, or undefined when it is not a layer type we know. */
export function layerCompression(mediaType: string): LayerCompression | undefined {
  switch (mediaType) {
    case LayerMediaTypes.OciTar:
    case LayerMediaTypes.OciNonDistTar:
    case LayerMediaTypes.DockerTar:
      return "none";
    case LayerMediaTypes.OciTarGzip:
    case LayerMediaTypes.OciNonDistTarGzip:
    case LayerMediaTypes.DockerTarGzip:
    case LayerMediaTypes.DockerForeignTarGzip:
      return "gzip";
    case LayerMediaTypes.OciTarZstd:
    case LayerMediaTypes.OciNonDistTarZstd:
    case LayerMediaTypes.DockerTarZstd:
      return "zstd";
    default:
      return undefined;
  }
}

/** Label on a layer blob naming its uncompressed digest. */
export const LABEL_UNCOMPRESSED = "containerd.io/uncompressed";
