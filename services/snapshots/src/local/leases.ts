/**
 * Lease resource records for snapshots, kept in the snapshots database (see SnapshotLeaseRecorder in
 * libs/core/snapshots.ts for the contract). Two indexes, written together:
 *
 *   ["l", ns, lease, type, id] -> created ms     what a lease holds
 *   ["r", ns, type, id, lease] -> 1               which leases hold a resource (to forget it on remove)
 */
import { namespaceRequired, type CallContext } from "#libs/context";
import { errInvalidArgument } from "#libs/errdefs";
import type { LeaseResource, SnapshotLeaseRecorder } from "#libs/core/snapshots";
import { leaseKey, MAX_KEY_PART, writeTxn, type SnapshotsDB } from "./db";

const reverseKey = (ns: string, type: string, id: string, lease: string): (string | number)[] => ["r", ns, type, id, lease];

/** Operations to call inside a write transaction. */
export function leaseRecordOps(db: SnapshotsDB): {
  add(ns: string, lease: string, type: string, id: string): void;
  remove(ns: string, lease: string, type: string, id: string): void;
  forgetResource(ns: string, type: string, id: string): void;
  /** True when any lease record in `ns` holds the resource. */
  held(ns: string, type: string, id: string): boolean;
} {
  const remove = (ns: string, lease: string, type: string, id: string): void => {
    void db.remove(leaseKey(ns, lease, type, id));
    void db.remove(reverseKey(ns, type, id, lease));
  };
  return {
    add(ns, lease, type, id) {
      if (db.get(leaseKey(ns, lease, type, id)) !== undefined) return;
      void db.put(leaseKey(ns, lease, type, id), Date.now());
      void db.put(reverseKey(ns, type, id, lease), 1);
    },
    remove,
    held(ns, type, id) {
      for (const _ of db.getKeys({ start: reverseKey(ns, type, id, ""), end: reverseKey(ns, type, id, MAX_KEY_PART), limit: 1 })) return true;
      return false;
    },
    forgetResource(ns, type, id) {
      const leases: string[] = [];
      for (const k of db.getKeys({ start: reverseKey(ns, type, id, ""), end: reverseKey(ns, type, id, MAX_KEY_PART) })) leases.push(String(k[4]));
      for (const l of leases) remove(ns, l, type, id);
    },
  };
}

/** Only `snapshots/<name>` resources are accepted (the content process records content and ingests). */
function checkResource(r: LeaseResource): void {
  if (!r.type.startsWith("snapshots/") || r.type.length === "snapshots/".length) throw errInvalidArgument(`unsupported resource type ${JSON.stringify(r.type)}`);
  if (!r.id) throw errInvalidArgument("resource id must not be empty");
}

export class LocalSnapshotLeaseRecorder implements SnapshotLeaseRecorder {
  constructor(private readonly db: SnapshotsDB) {}

  async addResource(ctx: CallContext, lease: string, resource: LeaseResource): Promise<void> {
    const ns = namespaceRequired(ctx);
    checkResource(resource);
    await writeTxn(this.db, () => leaseRecordOps(this.db).add(ns, lease, resource.type, resource.id));
  }

  async deleteResource(ctx: CallContext, lease: string, resource: LeaseResource): Promise<void> {
    const ns = namespaceRequired(ctx);
    await writeTxn(this.db, () => leaseRecordOps(this.db).remove(ns, lease, resource.type, resource.id));
  }

  async listResources(ctx: CallContext, lease: string): Promise<LeaseResource[]> {
    const ns = namespaceRequired(ctx);
    const out: LeaseResource[] = [];
    for (const k of this.db.getKeys({ start: leaseKey(ns, lease, "", ""), end: leaseKey(ns, lease, MAX_KEY_PART, "") })) {
      out.push({ type: String(k[3]), id: String(k[4]) });
    }
    return out;
  }

  async deleteLease(ctx: CallContext, lease: string): Promise<void> {
    const ns = namespaceRequired(ctx);
    const all = await this.listResources(ctx, lease);
    await writeTxn(this.db, () => {
      for (const r of all) leaseRecordOps(this.db).remove(ns, lease, r.type, r.id);
    });
  }
}
