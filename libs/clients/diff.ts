/** Applier and Comparer over gRPC (containerd.services.diff.v1.Diff). */
import type { CallContext } from "../context";
import { RpcClient, type Channel } from "../grpc/client";
import { toTimestamp } from "../proto";
import type { Applier, ApplyOptions, Comparer, Descriptor, DiffOptions } from "../core/diff";
import { mountToProto, type Mount } from "../mount";

export const DIFF_SERVICE = "containerd.services.diff.v1.Diff";

type Wire = Record<string, unknown>;

const descToWire = (d: Descriptor): Wire => ({ media_type: d.mediaType, digest: d.digest, size: d.size, annotations: d.annotations ?? {} });

function descFromWire(d: Wire | null | undefined): Descriptor {
  const x = d ?? {};
  const anns = x.annotations as Record<string, string> | undefined;
  return { mediaType: String(x.media_type ?? ""), digest: String(x.digest ?? ""), size: Number(x.size ?? 0), ...(anns && Object.keys(anns).length ? { annotations: anns } : {}) };
}

export class DiffProxy implements Applier, Comparer {
  private readonly rpc: RpcClient<typeof DIFF_SERVICE>;
  constructor(channel: Channel) {
    this.rpc = new RpcClient(channel, DIFF_SERVICE);
  }

  async apply(ctx: CallContext, desc: Descriptor, mounts: Mount[], opts: ApplyOptions = {}): Promise<Descriptor> {
    const payloads: Record<string, Wire> = {};
    for (const [k, v] of Object.entries(opts.payloads ?? {})) payloads[k] = { type_url: v.typeUrl, value: Buffer.from(v.value) };
    const r = await this.rpc.unary(ctx, "Apply", { diff: descToWire(desc), mounts: mounts.map(mountToProto), payloads, sync_fs: !!opts.syncFs });
    return descFromWire(r.applied);
  }

  async compare(ctx: CallContext, lower: Mount[], upper: Mount[], opts: DiffOptions = {}): Promise<Descriptor> {
    const r = await this.rpc.unary(ctx, "Diff", {
      left: lower.map(mountToProto),
      right: upper.map(mountToProto),
      media_type: opts.mediaType ?? "",
      ref: opts.ref ?? "",
      labels: opts.labels ?? {},
      source_date_epoch: opts.sourceDateEpoch ? toTimestamp(opts.sourceDateEpoch) : null,
    });
    return descFromWire(r.diff);
  }
}
