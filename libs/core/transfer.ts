/**
 * Transfer: containerd v2's generic "move an image from a source to a destination" contract, and the
 * side-channel streams that carry progress, credentials and bytes.
 *
 * Sources and destinations are the containerd.types.transfer.* objects, as domain types: a registry
 * (`OCIRegistry`), the local image store (`ImageStore`), and image archives over byte streams
 * (`ImageImportStream`, `ImageExportStream`). The gRPC adapter matches their bare type URLs and binds
 * the stream ids they carry to registered streams before calling a `Transferrer`.
 *
 * Supported pairs: registry -> store (pull), store -> registry (push), store -> export stream (export),
 * store -> store (tag), import stream -> store (import), import stream -> export stream (raw copy).
 * Any other pair is NotImplemented.
 *
 * No runtime dependencies: types, constants and pure helpers only.
 */
import type { CallContext } from "../context";

/** A message on a side-channel stream: an Any, as type URL plus encoded value. */
export interface StreamMessage {
  typeUrl: string;
  value: Uint8Array;
}

/**
 * One registered side-channel stream (containerd.services.streaming.v1 Stream), seen from the side
 * that uses it. `recv` resolves undefined once the peer has half-closed; `close` ends the stream.
 */
export interface TransferStream {
  send(msg: StreamMessage): Promise<void>;
  recv(): Promise<StreamMessage | undefined>;
  close(): Promise<void>;
  /** Aborted when the peer goes away or the stream is closed. */
  readonly signal: AbortSignal;
}

/** Streams by (namespace of the call, id). */
export interface StreamManager {
  /** AlreadyExists when the id is taken in the namespace. */
  register(ctx: CallContext, id: string, stream: TransferStream): void;
  /** NotFound when no such stream is open in the namespace. */
  get(ctx: CallContext, id: string): TransferStream;
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
}

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
  osVersion?: string;
  osFeatures?: string[];
}

export interface ProgressEvent {
  event: string;
  /** A content ref key (`layer-sha256:...`) or image name. */
  name?: string;
  parents?: string[];
  progress?: number;
  total?: number;
  desc?: Descriptor;
}

export type ProgressFn = (p: ProgressEvent) => void;

export const HttpDebugLevels = { Disabled: 0, Debug: 1, Trace: 2, Both: 3 } as const;

export interface RegistryCredentials {
  type: "none" | "credentials" | "refresh" | "header";
  username?: string;
  secret?: string;
  expireAt?: Date;
}

export interface RegistryResolverSpec {
  /** Asks for credentials per host (bound from `auth_stream`). */
  credentials?: (req: { host: string; reference: string; wwwAuthenticate: string[] }) => Promise<RegistryCredentials | undefined>;
  headers: Record<string, string>;
  hostDir: string;
  defaultScheme: string;
  httpDebug: number;
  /** Receives HTTP debug lines (bound from `logs_stream`). */
  logs?: (line: string) => void;
}

export interface OCIRegistrySpec {
  kind: "registry";
  reference: string;
  resolver: RegistryResolverSpec;
}

export interface UnpackConfiguration {
  platform: Platform;
  /** "" = the namespace's default snapshotter (label `containerd.io/defaults/snapshotter`), else overlayfs. */
  snapshotter: string;
}

export interface ImageReferenceSpec {
  name: string;
  isPrefix: boolean;
  allowOverwrite: boolean;
  addDigest: boolean;
  skipNamedDigest: boolean;
}

export interface ImageStoreSpec {
  kind: "image-store";
  name: string;
  labels: Record<string, string>;
  /** Empty = all platforms. */
  platforms: Platform[];
  allMetadata: boolean;
  manifestLimit: number;
  extraReferences: ImageReferenceSpec[];
  unpacks: UnpackConfiguration[];
}

export interface ImportStreamSpec {
  kind: "import-stream";
  stream: TransferStream;
  mediaType: string;
  forceCompress: boolean;
}

export interface ExportStreamSpec {
  kind: "export-stream";
  stream: TransferStream;
  mediaType: string;
  platforms: Platform[];
  allPlatforms: boolean;
  skipCompatibilityManifest: boolean;
  skipNonDistributable: boolean;
}

export type TransferObject = OCIRegistrySpec | ImageStoreSpec | ImportStreamSpec | ExportStreamSpec;

export interface TransferOptions {
  progress?: ProgressFn;
}

export interface Transferrer {
  /** NotImplemented when this transferrer does not handle the pair. */
  transfer(ctx: CallContext, src: TransferObject, dst: TransferObject, opts?: TransferOptions): Promise<void>;
}

export const TransferTypeUrls = {
  OCIRegistry: "containerd.types.transfer.OCIRegistry",
  ImageStore: "containerd.types.transfer.ImageStore",
  ImageImportStream: "containerd.types.transfer.ImageImportStream",
  ImageExportStream: "containerd.types.transfer.ImageExportStream",
} as const;

export const StreamTypeUrls = {
  StreamInit: "containerd.services.streaming.v1.StreamInit",
  Empty: "google.protobuf.Empty",
  Progress: "containerd.types.transfer.Progress",
  AuthRequest: "containerd.types.transfer.AuthRequest",
  AuthResponse: "containerd.types.transfer.AuthResponse",
  Data: "containerd.types.transfer.Data",
  WindowUpdate: "containerd.types.transfer.WindowUpdate",
} as const;

/**
 * Byte streams: credit is granted in units of WINDOW_UNIT bytes. containerd's sender uses chunks of
 * at most 32 KiB; receivers take any size within the credit, so Flotilla's sender goes up to
 * MAX_DATA_CHUNK when the receiver grants that much (its own receiver keeps BYTE_WINDOW outstanding).
 */
export const WINDOW_UNIT = 64 * 1024;
export const DATA_CHUNK = 32 * 1024;
export const MAX_DATA_CHUNK = 256 * 1024;
export const BYTE_WINDOW = 1024 * 1024;

/** The progress `event` strings, as containerd's transferrers send them. */
export const ProgressEvents = {
  waiting: "waiting",
  downloading: "downloading",
  alreadyExists: "already exists",
  complete: "complete",
  extracting: "extracting",
  extracted: "extracted",
  saved: "saved",
  pushing: "pushing content",
  pushed: "pushed content",
  importing: "Importing",
  exporting: "Exporting",
  fetching: "fetching image content",
  resolving: (ref: string): string => `Resolving from ${ref}`,
  pulling: (ref: string): string => `Pulling from ${ref}`,
  completedPull: (ref: string): string => `Completed pull from ${ref}`,
  pushingTo: (ref: string): string => `Pushing to ${ref}`,
  completedPush: (ref: string): string => `Completed push to ${ref}`,
  completedImport: "Completed import",
  completedExport: "Completed export",
} as const;

/** Labels the transfer service puts on leases it creates. */
export const TRANSFER_LEASE_LABEL = "flotilla.io/transfer";
