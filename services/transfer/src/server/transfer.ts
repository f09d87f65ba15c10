/**
 * containerd.services.transfer.v1.Transfer: a thin adapter. Source and destination Anys are matched by
 * their exact (bare) type URL, the stream ids they carry are bound to registered streams, and the local
 * transferrer runs the pair. Unknown types or pairs answer Unimplemented with containerd's message.
 */
import { Status as GrpcStatus } from "#libs/grpc/status";
import type { Logger } from "pino";
import type { CallContext } from "#libs/context";
import { namespaceRequired } from "#libs/context";
import { authResponseFromProto, platformFromProto, progressToProto, sendBytes } from "#libs/clients/transfer";
import { errCanceled, isNotImplemented } from "#libs/errdefs";
import { serviceHandlers, type Msg, type ServiceHandlers } from "#libs/grpc/server";
import { decode, encode } from "#libs/proto";
import {
  StreamTypeUrls, TransferTypeUrls,
  type ProgressEvent, type RegistryCredentials, type StreamManager, type TransferObject, type Transferrer, type TransferStream,
} from "#libs/core/transfer";

export const TRANSFER_SERVICE = "containerd.services.transfer.v1.Transfer";

function unimplemented(src: string, dst: string): Error {
  const msg = `method Transfer not implemented for ${src} to ${dst}`;
  return Object.assign(new Error(msg), { code: GrpcStatus.UNIMPLEMENTED, details: msg });
}

/** Ask for credentials over an auth stream: one AuthRequest, one AuthResponse, calls serialised. */
export function streamCredentials(stream: TransferStream): NonNullable<Extract<TransferObject, { kind: "registry" }>["resolver"]["credentials"]> {
  let chain: Promise<unknown> = Promise.resolve();
  return (req) => {
    const p = chain.then(async (): Promise<RegistryCredentials | undefined> => {
      await stream.send({ typeUrl: StreamTypeUrls.AuthRequest, value: encode(StreamTypeUrls.AuthRequest, { host: req.host, reference: req.reference, wwwauthenticate: req.wwwAuthenticate }) });
      for (;;) {
        const m = await stream.recv();
        if (!m) return undefined;
        if (m.typeUrl.replace(/^.*\//, "") === StreamTypeUrls.AuthResponse) return authResponseFromProto(decode(StreamTypeUrls.AuthResponse, m.value));
      }
    });
    chain = p.catch(() => undefined);
    return p;
  };
}

/** Lines written as a byte stream (the resolver's logs_stream), sent as credit allows; dropped when the client lags far behind. */
function lineWriter(stream: TransferStream): (line: string) => void {
  const queue: Buffer[] = [];
  let wake: (() => void) | undefined;
  void sendBytes(stream, (async function* () {
    for (;;) {
      while (queue.length) yield queue.shift()!;
      if (stream.signal.aborted) return;
      await new Promise<void>((r) => {
        wake = r;
        stream.signal.addEventListener("abort", () => r(), { once: true });
      });
      wake = undefined;
    }
  })()).catch(() => undefined);
  return (line) => {
    if (queue.length < 10_000) queue.push(Buffer.from(line.endsWith("\n") ? line : `${line}\n`));
    wake?.();
  };
}

/** Decode a source or destination; undefined for a type URL that is not one of ours. */
export function convertAny(ctx: CallContext, a: Msg | null | undefined, streams: StreamManager, log?: Logger): TransferObject | undefined {
  const url = String(a?.type_url ?? "");
  const value = (a?.value as Buffer | undefined) ?? Buffer.alloc(0);
  switch (url) {
    case TransferTypeUrls.OCIRegistry: {
      const m = decode<Msg>(url, value);
      const r = (m.resolver ?? {}) as Msg;
      const authId = String(r.auth_stream ?? "");
      const logsId = String(r.logs_stream ?? "");
      const debug = Number(r.http_debug ?? 0);
      const logs = debug ? (logsId ? lineWriter(streams.get(ctx, logsId)) : (line: string) => log?.info({ reference: m.reference }, line)) : undefined;
      return {
        kind: "registry",
        reference: String(m.reference ?? ""),
        resolver: {
          ...(authId ? { credentials: streamCredentials(streams.get(ctx, authId)) } : {}),
          headers: (r.headers as Record<string, string>) ?? {},
          hostDir: String(r.host_dir ?? ""),
          defaultScheme: String(r.default_scheme ?? ""),
          httpDebug: Number(r.http_debug ?? 0),
          ...(logs ? { logs } : {}),
        },
      };
    }
    case TransferTypeUrls.ImageStore: {
      const m = decode<Msg>(url, value);
      return {
        kind: "image-store",
        name: String(m.name ?? ""),
        labels: (m.labels as Record<string, string>) ?? {},
        platforms: ((m.platforms as Msg[]) ?? []).map(platformFromProto),
        allMetadata: !!m.all_metadata,
        manifestLimit: Number(m.manifest_limit ?? 0),
        extraReferences: ((m.extra_references as Msg[]) ?? []).map((r) => ({
          name: String(r.name ?? ""), isPrefix: !!r.is_prefix, allowOverwrite: !!r.allow_overwrite, addDigest: !!r.add_digest, skipNamedDigest: !!r.skip_named_digest,
        })),
        unpacks: ((m.unpacks as Msg[]) ?? []).map((u) => ({ platform: platformFromProto(u.platform as Msg), snapshotter: String(u.snapshotter ?? "") })),
      };
    }
    case TransferTypeUrls.ImageImportStream: {
      const m = decode<Msg>(url, value);
      return { kind: "import-stream", stream: streams.get(ctx, String(m.stream ?? "")), mediaType: String(m.media_type ?? ""), forceCompress: !!m.force_compress };
    }
    case TransferTypeUrls.ImageExportStream: {
      const m = decode<Msg>(url, value);
      return {
        kind: "export-stream",
        stream: streams.get(ctx, String(m.stream ?? "")),
        mediaType: String(m.media_type ?? ""),
        platforms: ((m.platforms as Msg[]) ?? []).map(platformFromProto),
        allPlatforms: !!m.all_platforms,
        skipCompatibilityManifest: !!m.skip_compatibility_manifest,
        skipNonDistributable: !!m.skip_non_distributable,
      };
    }
    default:
      return undefined;
  }
}

/** Progress sent in order on the progress stream, without blocking the transfer; byte updates may be dropped when it lags. */
class ProgressSender {
  private chain: Promise<void> = Promise.resolve();
  private queued = 0;
  private broken = false;

  constructor(private readonly stream: TransferStream) {}

  push(p: ProgressEvent): void {
    if (this.broken) return;
    const isBytes = p.event === "downloading" || p.event === "pushing content" || p.event === "uploading";
    if (isBytes && this.queued > 64) return;
    this.queued++;
    this.chain = this.chain.then(async () => {
      try {
        await this.stream.send({ typeUrl: StreamTypeUrls.Progress, value: encode(StreamTypeUrls.Progress, progressToProto(p)) });
      } catch {
        this.broken = true;
      } finally {
        this.queued--;
      }
    });
  }

  async close(): Promise<void> {
    await this.chain;
    await this.stream.close();
  }
}

export function transferHandlers(local: Transferrer, streams: StreamManager, log?: Logger): ServiceHandlers<typeof TRANSFER_SERVICE> {
  return serviceHandlers(TRANSFER_SERVICE, {
    Transfer: async (ctx, req) => {
      namespaceRequired(ctx);
      const srcUrl = String(req.source?.type_url ?? "");
      const dstUrl = String(req.destination?.type_url ?? "");
      const opened: TransferStream[] = [];
      const tracking: StreamManager = {
        register: (c, id, s) => streams.register(c, id, s),
        get: (c, id) => {
          const s = streams.get(c, id);
          opened.push(s);
          return s;
        },
      };
      let sender: ProgressSender | undefined;
      try {
        const src = convertAny(ctx, req.source, tracking, log);
        const dst = convertAny(ctx, req.destination, tracking, log);
        if (!src || !dst) throw unimplemented(srcUrl, dstUrl);
        const progressId = String(req.options?.progress_stream ?? "");
        if (progressId) sender = new ProgressSender(streams.get(ctx, progressId));
        // A client that goes away cancels the transfer.
        const ac = new AbortController();
        const cancel = (): void => ac.abort(errCanceled("transfer canceled by client"));
        ctx.signal.addEventListener("abort", cancel, { once: true });
        try {
          await local.transfer({ ...ctx, signal: ac.signal }, src, dst, { progress: sender ? (p) => sender!.push(p) : undefined });
        } catch (e) {
          if (isNotImplemented(e)) {
            log?.debug({ err: e }, `transfer not implemented for ${srcUrl} to ${dstUrl}`);
            throw unimplemented(srcUrl, dstUrl);
          }
          throw e;
        } finally {
          ctx.signal.removeEventListener("abort", cancel);
        }
        return {};
      } finally {
        await sender?.close().catch(() => undefined);
        for (const s of opened) await s.close().catch(() => undefined);
      }
    },
  });
}
