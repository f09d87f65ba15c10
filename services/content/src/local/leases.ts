/** LeaseResourceRecorder on the content process's LMDB: what each lease holds, per namespace. */
import { writeTxn } from "#libs/lmdb";
import { namespaceRequired, type CallContext } from "#libs/context";
import { errInvalidArgument } from "#libs/errdefs";
import {
  LEASE_RESOURCE_CONTENT,
  LEASE_RESOURCE_INGESTS,
  isValidDigest,
  type LeaseResource,
  type LeaseResourceRecorder,
} from "#libs/core/content";
import { blobKey, ingestKey, leasedId, leaseKey, leaseValue, scanPrefix, type ContentDB } from "./db";

function validate(lease: string, r: LeaseResource): void {
  if (!lease) throw errInvalidArgument("lease id must not be empty");
  if (r.type === LEASE_RESOURCE_CONTENT) {
    if (!isValidDigest(r.id)) throw errInvalidArgument(`${JSON.stringify(r.id)} failed validation`);
  } else if (r.type === LEASE_RESOURCE_INGESTS) {
    if (!r.id) throw errInvalidArgument("ingest ref must not be empty");
  } else {
    throw errInvalidArgument(`resource type ${JSON.stringify(r.type)} is not held by the content store`);
  }
}

export class LocalLeaseResources implements LeaseResourceRecorder {
  constructor(private readonly db: ContentDB) {}

  async addResource(ctx: CallContext, lease: string, resource: LeaseResource): Promise<void> {
    const ns = namespaceRequired(ctx);
    validate(lease, resource);
    await this.db.put(leaseKey(ns, lease, resource.type, resource.id), leaseValue(resource.id));
  }

  async deleteResource(ctx: CallContext, lease: string, resource: LeaseResource): Promise<void> {
    const ns = namespaceRequired(ctx);
    validate(lease, resource);
    await this.db.remove(leaseKey(ns, lease, resource.type, resource.id));
  }

  /** Resources that still exist: a blob deleted from the namespace or a finished ingest is no longer held. */
  async listResources(ctx: CallContext, lease: string): Promise<LeaseResource[]> {
    const ns = namespaceRequired(ctx);
    const out: LeaseResource[] = [];
    for (const { key, value } of scanPrefix(this.db, ["l", ns, lease])) {
      const type = String(key[3]);
      const id = leasedId(key, value);
      const live = type === LEASE_RESOURCE_CONTENT ? this.db.get(blobKey(ns, id)) !== undefined : this.db.get(ingestKey(ns, id)) !== undefined;
      if (live) out.push({ type, id });
    }
    return out;
  }

  async deleteLease(ctx: CallContext, lease: string): Promise<void> {
    const ns = namespaceRequired(ctx);
    await writeTxn(this.db, () => {
      for (const { key } of scanPrefix(this.db, ["l", ns, lease])) void this.db.remove(key);
    });
  }
}
