/**
 * Leases: containerd's protection of resources from garbage collection, as a contract.
 *
 * The images process owns the leases themselves (id, labels, creation time) and serves the public
 * containerd.services.leases.v1.Leases API. What a lease *holds* is recorded by the process that owns
 * each resource, in the same transaction that writes it (content: `content` and `ingests`; snapshots:
 * `snapshots/<snapshotter>`), because a write carrying the `containerd-lease` header happens there.
 * Those processes expose their records as a `LeaseResourceHolder` (the same Leases service, on their own
 * address, answering AddResource/DeleteResource/ListResources/Delete); the lease manager routes each
 * resource to its holder by type and merges their lists.
 *
 * Every method takes the call context first and requires a namespace (FailedPrecondition without one).
 * No runtime dependencies: types, constants and pure helpers only.
 */
import type { CallContext } from "../context";

export interface Lease {
  id: string;
  createdAt: Date;
  labels: Record<string, string>;
}

/** A resource held by a lease, named as containerd's leases API names it. */
export interface LeaseResource {
  /** `content` (id = digest), `ingests` (id = ref) or `snapshots/<snapshotter>` (id = key). */
  type: string;
  id: string;
}

export interface LeaseCreateOptions {
  /** "" or absent: the server generates `<nanos>-<base64 of 3 random bytes>`, as containerd does. */
  id?: string;
  labels?: Record<string, string>;
}

export interface LeaseDeleteOptions {
  /** Return only after a garbage collection that started after the deletion has finished. */
  sync?: boolean;
}

export interface LeaseManager {
  /** AlreadyExists when a lease with that id is in the namespace; InvalidArgument for bad labels. */
  create(ctx: CallContext, opts: LeaseCreateOptions): Promise<Lease>;
  /** NotFound when absent. What it held becomes collectable. */
  delete(ctx: CallContext, id: string, opts?: LeaseDeleteOptions): Promise<void>;
  /** Leases of the namespace matching any of `filters` (fields `id`, `labels.<key>`). */
  list(ctx: CallContext, filters?: readonly string[]): Promise<Lease[]>;
  /**
   * Record `resource` under the lease. NotFound for an unknown lease; InvalidArgument for a malformed
   * resource; NotImplemented for a type no process holds ("resource type X not supported yet").
   */
  addResource(ctx: CallContext, id: string, resource: LeaseResource): Promise<void>;
  /** Forget one resource (absent is fine). NotFound for an unknown lease. */
  deleteResource(ctx: CallContext, id: string, resource: LeaseResource): Promise<void>;
  /** Everything the lease holds, across processes. NotFound for an unknown lease. */
  listResources(ctx: CallContext, id: string): Promise<LeaseResource[]>;
}

/**
 * The records one owning process keeps of what leases hold there (content's LeaseResourceRecorder and
 * snapshots' SnapshotLeaseRecorder are this interface; libs/leaseholder serves it over gRPC). Records
 * do not check that the lease exists: the lease manager does, and garbage collection only honours
 * records of live leases.
 */
export interface LeaseResourceHolder {
  /** Record `resource` under `lease` in the call's namespace (idempotent). */
  addResource(ctx: CallContext, lease: string, resource: LeaseResource): Promise<void>;
  /** Forget one resource (idempotent). */
  deleteResource(ctx: CallContext, lease: string, resource: LeaseResource): Promise<void>;
  /** Everything `lease` holds here in the call's namespace. */
  listResources(ctx: CallContext, lease: string): Promise<LeaseResource[]>;
  /** Forget everything `lease` holds here (the lease is gone). */
  deleteLease(ctx: CallContext, lease: string): Promise<void>;
}

export const LEASE_RESOURCE_TYPES = {
  content: "content",
  ingests: "ingests",
  snapshotsPrefix: "snapshots/",
} as const;

/** Which kind of holder a resource type belongs to, or undefined when none does. */
export function leaseResourceHolderKind(type: string): "content" | "snapshots" | undefined {
  if (type === LEASE_RESOURCE_TYPES.content || type === LEASE_RESOURCE_TYPES.ingests) return "content";
  const parts = type.split("/");
  if (parts[0] === "snapshots") return "snapshots";
  return undefined;
}

/**
 * Validate a resource as containerd's parseLeaseResource does; returns an error message and the
 * error class to use, or undefined when it is well-formed.
 */
export function checkLeaseResource(r: LeaseResource): { code: "invalid" | "unsupported"; message: string } | undefined {
  const keys = r.type.split("/");
  switch (keys[0]) {
    case LEASE_RESOURCE_TYPES.content:
    case LEASE_RESOURCE_TYPES.ingests:
      if (keys.length !== 1) return { code: "invalid", message: `invalid resource type ${r.type}` };
      if (keys[0] === LEASE_RESOURCE_TYPES.content && !/^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/.test(r.id)) {
        return { code: "invalid", message: `invalid content resource id ${r.id}: invalid checksum digest format` };
      }
      if (!r.id) return { code: "invalid", message: "resource id must not be empty" };
      return undefined;
    case "snapshots":
      if (keys.length !== 2 || !keys[1]) return { code: "invalid", message: `invalid snapshot resource type ${r.type}` };
      if (!r.id) return { code: "invalid", message: "resource id must not be empty" };
      return undefined;
    default:
      return { code: "unsupported", message: `resource type ${r.type} not supported yet` };
  }
}

/**
 * containerd's leases.WithRandomID: `<nanosecond of the current second>-<URL-safe base64 of 3 random
 * bytes>` (e.g. `532717342-tQz3`).
 */
export function randomLeaseId(nowNanosOfSecond: number, random3: Uint8Array): string {
  const b64 = Buffer.from(random3.subarray(0, 3)).toString("base64").replace(/\+/g, "-").replace(/\//g, "_");
  return `${nowNanosOfSecond}-${b64}`;
}
