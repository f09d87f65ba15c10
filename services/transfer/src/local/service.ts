/**
 * The local transferrer (plugin io.containerd.transfer.v1.local): dispatches a source/destination pair
 * to pull, push, tag, import, export or a raw archive copy, each under a lease (the caller's, or a
 * temporary one expiring in 24 h that is deleted when the transfer ends).
 */
import type { CallContext } from "../../../../libs/context";
import { namespaceRequired } from "../../../../libs/context";
import { errNotImplemented } from "../../../../libs/errdefs";
import { TRANSFER_LEASE_LABEL, type TransferObject, type TransferOptions, type Transferrer } from "../../../../libs/core/transfer";
import { Labels } from "../../../../libs/oci";
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
    } finally {
      await this.deps.leases.delete({ ...ctx, lease: undefined }, lease.id).catch((err: unknown) => ctx.log?.warn({ err, lease: lease.id }, "failed to delete transfer lease"));
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
