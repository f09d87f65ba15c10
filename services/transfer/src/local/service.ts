/**
 * The local transferrer (plugin io.containerd.transfer.v1.local): dispatches a source/destination pair
 * to pull, push, tag, import, export or a raw archive copy, each under a lease (the caller's, or a
 * temporary one expiring in 24 h that is deleted when the transfer ends).
 */
import type { CallContext } from "#libs/context";
import { namespaceRequired } from "#libs/context";
import { errNotImplemented } from "#libs/errdefs";
import { TRANSFER_LEASE_LABEL, type TransferObject, type TransferOptions, type Transferrer } from "#libs/core/transfer";
import { LEASE_RESOURCE_INGESTS } from "#libs/core/content";
import { Labels } from "#libs/oci";
import type { TransferDeps } from "./deps";
import { exportArchive } from "./export";
import { copyArchive, importArchive } from "./import";
import { pull } from "./pull";
import { push } from "./push";
import { tag } from "./tag";
import { rfc3339 } from "./util";

export const LEASE_EXPIRY_MS = 24 * 3600 * 1000;

function kindName(o: TransferObject): string {
  switch (o.kind) {
    case "registry": return `OCIRegistry(${o.reference})`;
    case "image-store": return `ImageStore(${o.name})`;
    case "import-stream": return "ImageImportStream";
    case "export-stream": return "ImageExportStream";
  }
}

export class LocalTransferService implements Transferrer {
  constructor(private readonly deps: TransferDeps) {}

  private async withLease(ctx: CallContext, op: string, fn: (ctx: CallContext) => Promise<void>): Promise<void> {
    if (ctx.lease) return fn(ctx);
    const lease = await this.deps.leases.create(ctx, { labels: { [Labels.gcExpire]: rfc3339(Date.now() + LEASE_EXPIRY_MS), [TRANSFER_LEASE_LABEL]: op } });
    try {
      await fn({ ...ctx, lease: lease.id });
    } catch (e) {
      await this.abortIngests({ ...ctx, lease: undefined }, lease.id);
      throw e;
    } finally {
      await this.deps.leases.delete({ ...ctx, lease: undefined }, lease.id).catch((err: unknown) => ctx.log?.warn({ err, lease: lease.id }, "failed to delete transfer lease"));
    }
  }

  /**
   * A failed transfer under its own lease leaves no ingest behind: nothing can resume them once the
   * lease is gone, so they are aborted now rather than left to a later garbage collection.
   */
  private async abortIngests(ctx: CallContext, lease: string): Promise<void> {
    try {
      const held = await this.deps.leases.listResources(ctx, lease);
      await Promise.all(held.filter((r) => r.type === LEASE_RESOURCE_INGESTS).map((r) => this.deps.content.abort(ctx, r.id).catch(() => undefined)));
    } catch (err) {
      ctx.log?.warn({ err, lease }, "failed to abort the ingests of a failed transfer");
    }
  }

  async transfer(ctx: CallContext, src: TransferObject, dst: TransferObject, opts: TransferOptions = {}): Promise<void> {
    namespaceRequired(ctx);
    const p = opts.progress;
    if (src.kind === "registry" && dst.kind === "image-store") return this.withLease(ctx, "pull", (c) => pull(this.deps, c, src, dst, p));
    if (src.kind === "image-store" && dst.kind === "registry") return this.withLease(ctx, "push", (c) => push(this.deps, c, src, dst, p));
    if (src.kind === "image-store" && dst.kind === "export-stream") return this.withLease(ctx, "export", (c) => exportArchive(this.deps, c, src, dst, p));
    if (src.kind === "image-store" && dst.kind === "image-store") return this.withLease(ctx, "tag", (c) => tag(this.deps, c, src, dst, p));
    if (src.kind === "import-stream" && dst.kind === "image-store") return this.withLease(ctx, "import", (c) => importArchive(this.deps, c, src, dst, p));
    if (src.kind === "import-stream" && dst.kind === "export-stream") return copyArchive(src, dst, p);
    throw errNotImplemented(`unable to transfer from ${kindName(src)} to ${kindName(dst)}`);
  }
}
