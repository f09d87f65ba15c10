/** gRPC adapter for containerd.services.diff.v1.Diff: validate, call the differ, convert. */
import { serviceHandlers, type ServiceHandlers } from "#libs/grpc/server";
import { errInvalidArgument } from "#libs/errdefs";
import { fromTimestamp } from "#libs/proto";
import type { Applier, Comparer, Descriptor } from "#libs/core/diff";
import { mountFromProto } from "#libs/mount";
import type { Input } from "#libs/proto/types";

export const DIFF_SERVICE = "containerd.services.diff.v1.Diff";

export const descriptorToProto = (d: Descriptor): Input["containerd.types.Descriptor"] => ({ media_type: d.mediaType, digest: d.digest, size: d.size, annotations: d.annotations ?? {} });

export function descriptorFromProto(d: Record<string, unknown> | null | undefined): Descriptor {
  if (!d) throw errInvalidArgument("descriptor must be set");
  const anns = d.annotations as Record<string, string> | undefined;
  return { mediaType: String(d.media_type ?? ""), digest: String(d.digest ?? ""), size: Number(d.size ?? 0), ...(anns && Object.keys(anns).length ? { annotations: anns } : {}) };
}

export function diffHandlers(differ: Applier & Comparer): ServiceHandlers<typeof DIFF_SERVICE> {
  return serviceHandlers(DIFF_SERVICE, {
    Apply: async (ctx, req) => {
      const payloads: Record<string, { typeUrl: string; value: Uint8Array }> = {};
      for (const [k, v] of Object.entries((req.payloads ?? {}) as Record<string, { type_url: string; value: Buffer }>)) payloads[k] = { typeUrl: v.type_url, value: v.value };
      const applied = await differ.apply(ctx, descriptorFromProto(req.diff), (req.mounts ?? []).map(mountFromProto), { payloads, syncFs: !!req.sync_fs });
      return { applied: descriptorToProto(applied) };
    },
    Diff: async (ctx, req) => {
      const sde = req.source_date_epoch ? fromTimestamp(req.source_date_epoch) : undefined;
      const d = await differ.compare(ctx, (req.left ?? []).map(mountFromProto), (req.right ?? []).map(mountFromProto), {
        mediaType: req.media_type || undefined,
        ref: req.ref || undefined,
        labels: req.labels ?? {},
        ...(sde ? { sourceDateEpoch: sde } : {}),
      });
      return { diff: descriptorToProto(d) };
    },
  });
}
