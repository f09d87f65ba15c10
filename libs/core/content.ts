/**
 * Content: containerd's content-addressed blob store, as a contract.
 *
 * One interface (`ContentStore`) with two implementations: the local store in the content process
 * (services/content/src/local) and `ContentStoreProxy` over gRPC (libs/clients/content.ts), so callers
 * cannot tell local from remote. Both are checked by the same conformance suite (test/content/suite.ts).
 *
 * Every method takes the call context first; all of them require a namespace (FailedPrecondition
 * without one). Blobs are visible only in the namespaces that own them (committed there), even
 * though the bytes are stored once. Errors are errdefs classes, named in each method's comment.
 *
 * No runtime dependencies: types, constants and pure helpers only.
 */
import type { CallContext } from "../context";
import type { LeaseResource, LeaseResourceHolder } from "./leases";

/** A committed blob as seen in one namespace. */
export interface ContentInfo {
  digest: string;
  size: number;
  createdAt: Date;
  updatedAt: Date;
  labels: Record<string, string>;
}

/** The state of an ingest (an unfinished write), keyed by ref within a namespace. */
export interface IngestStatus {
  ref: string;
  /** Bytes written so far: the resume point. */
  offset: number;
  /** Expected total size, 0 when unknown. */
  total: number;
  /** Expected digest, "" when unknown (set only for shared ingests that need no data). */
  expected: string;
  startedAt: Date;
  updatedAt: Date;
}

export interface WriterOptions {
  /** Required; identifies the ingest so it can be resumed. */
  ref: string;
  /** Expected size, 0 when unknown. */
  total?: number;
  /** Expected digest, "" when unknown. */
  expected?: string;
}

/**
 * An open ingest. Holding a writer holds the ref's lock; `close` releases it and keeps the progress,
 * so a later `writer()` with the same ref resumes at `status().offset`.
 */
export interface ContentWriter {
  readonly ref: string;
  /** Current progress. For a shared ingest (the blob already exists in another namespace) offset == total. */
  status(): Promise<IngestStatus>;
  /**
   * The digest of the bytes written so far ("sha256:..."). A remote writer with writes in flight
   * (ContentStoreProxy's write window) knows it as of the last acknowledged write: status() first.
   */
  digest(): string;
  /** Append `data`; resolves with the new offset. */
  write(data: Uint8Array): Promise<number>;
  /** Discard everything written (only `0` is supported, as in containerd). */
  truncate(size: number): Promise<void>;
  /**
   * Verify and commit. `size` 0 and `expected` "" skip the respective check. A mismatch is
   * FailedPrecondition and commits nothing (the ingest stays, resumable or abortable). When the blob
   * already exists in the namespace: AlreadyExists, and the ingest is removed. The writer is closed
   * afterwards in every case.
   */
  commit(size: number, expected: string, labels?: Record<string, string>): Promise<void>;
  /** Release the lock, keeping the progress. Idempotent. */
  close(): Promise<void>;
}

/** Random access to a committed blob. */
export interface ContentReaderAt {
  readonly size: number;
  /** Read up to `buf.length` bytes at `position` into `buf`; resolves with the count (0 at the end). */
  readAt(buf: Uint8Array, position: number): Promise<number>;
  close(): Promise<void>;
}

export interface ContentStore {
  /** NotFound when the blob is not in the namespace; InvalidArgument for a malformed digest. */
  info(ctx: CallContext, digest: string): Promise<ContentInfo>;
  /**
   * Update mutable fields. `paths` are field-mask paths: `labels` (replace) or `labels.<key>` (set one;
   * an empty or missing value deletes it); no paths replaces the labels. Other paths: InvalidArgument.
   * NotFound when the blob is not in the namespace.
   */
  update(ctx: CallContext, info: Pick<ContentInfo, "digest" | "labels">, paths: readonly string[]): Promise<ContentInfo>;
  /** Call `fn` for every blob of the namespace matching any of `filters` (fields `digest`, `size`, `labels.<key>`). */
  walk(ctx: CallContext, fn: (info: ContentInfo) => void | Promise<void>, filters?: readonly string[]): Promise<void>;
  /** Remove the blob from the namespace (the bytes go once no namespace owns them). NotFound when absent. */
  delete(ctx: CallContext, digest: string): Promise<void>;
  /** NotFound when the blob is not in the namespace. */
  readerAt(ctx: CallContext, digest: string): Promise<ContentReaderAt>;

  /** NotFound for an unknown ref. */
  status(ctx: CallContext, ref: string): Promise<IngestStatus>;
  /** Active ingests matching any of `filters` (field `ref`); `""` matches all. */
  listStatuses(ctx: CallContext, filters?: readonly string[]): Promise<IngestStatus[]>;
  /** Remove an ingest and its data. NotFound for an unknown ref. */
  abort(ctx: CallContext, ref: string): Promise<void>;
  /**
   * Open (or resume) the ingest `ref`. AlreadyExists when `expected` is already in the namespace;
   * Unavailable ("ref ... locked") while another writer holds the ref; InvalidArgument for an empty ref.
   */
  writer(ctx: CallContext, opts: WriterOptions): Promise<ContentWriter>;
}

/**
 * Which content a lease holds (resources `content`, id = digest, and `ingests`, id = ref). Writes made
 * with `ctx.lease` set (the `containerd-lease` header) record the ingest while it is open and the blob
 * once committed; garbage collection (run by the images process, which owns leases) must keep every
 * resource listed here while the lease lives, and call `deleteLease` once the lease is gone. The content
 * process serves its records as every owning process does (libs/leaseholder).
 */
export type LeaseResourceRecorder = LeaseResourceHolder;
export type { LeaseResource };

export const LEASE_RESOURCE_CONTENT = "content";
export const LEASE_RESOURCE_INGESTS = "ingests";

export const CONTENT_EVENTS = {
  create: { topic: "/content/create", type: "containerd.events.ContentCreate" },
  delete: { topic: "/content/delete", type: "containerd.events.ContentDelete" },
} as const;

/** Largest chunk a Read response or a Write request carries. */
export const MAX_CHUNK = 1 << 20;

const DIGEST_HEX: Record<string, number> = { sha256: 64, sha384: 96, sha512: 128 };

/** go-digest's Validate: `<algorithm>:<lowercase hex of the algorithm's length>`, sha256/384/512. */
export function isValidDigest(d: string): boolean {
  const i = d.indexOf(":");
  if (i <= 0) return false;
  const len = DIGEST_HEX[d.slice(0, i)];
  const hex = d.slice(i + 1);
  return len !== undefined && hex.length === len && /^[a-f0-9]+$/.test(hex);
}
