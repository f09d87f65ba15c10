/**
 * The Transfer API from the client side (containerd.services.transfer.v1 + streaming.v1), and the
 * stream protocols both sides share:
 * - `openStream`: a side-channel stream (StreamInit{id}, wait for the Empty ack);
 * - `sendBytes` / `receiveBytes`: byte streams with credit (WindowUpdate) and Data chunks;
 * - `serveCredentials`: answer AuthRequests on an auth stream;
 * - `TransferClient`: pull, push, import, export and tag, with progress.
 * Type URLs are bare full names, as containerd matches them by exact string.
 */
import { randomBytes } from "node:crypto";
import type { Readable, Writable } from "node:stream";
import type { CallContext } from "../context";
import { errCanceled, errFailedPrecondition } from "../errdefs";
import { RpcClient, type BidiCall, type Channel } from "../grpc/client";
import { waitAtMost } from "../sync";
import type { Msg } from "../grpc/server";
import { decode, encode, fromTimestamp, toTimestamp } from "../proto";
import {
  BYTE_WINDOW, MAX_DATA_CHUNK, StreamTypeUrls, TransferTypeUrls, WINDOW_UNIT,
  type Descriptor, type ImageReferenceSpec, type Platform, type ProgressEvent, type RegistryCredentials, type StreamMessage, type TransferStream, type UnpackConfiguration,
} from "../core/transfer";
import type { ClientRequest, ClientResponse, Input } from "../proto/types";

export const TRANSFER_SERVICE = "containerd.services.transfer.v1.Transfer";
export const STREAMING_SERVICE = "containerd.services.streaming.v1.Streaming";

const any = (typeUrl: string, value: Record<string, unknown>): StreamMessage => ({ typeUrl, value: encode(typeUrl, value) });

/** containerd's stream ids: `<prefix>-<nanosecond>-<base64url of 3 random bytes>`. */
export function streamId(prefix: string): string {
  const ns = Number(process.hrtime.bigint() % 1_000_000_000n);
  return `${prefix}-${ns}-${randomBytes(3).toString("base64url")}`;
}

type StreamCall = BidiCall<ClientRequest<typeof STREAMING_SERVICE, "Stream">, ClientResponse<typeof STREAMING_SERVICE, "Stream">>;

class ClientStream implements TransferStream {
  private readonly it: AsyncIterator<ClientResponse<typeof STREAMING_SERVICE, "Stream">>;
  private readonly ac = new AbortController();
  private reading: Promise<unknown> = Promise.resolve();
  private halfClosed = false;

  constructor(private readonly call: StreamCall) {
    this.it = call.responses[Symbol.asyncIterator]();
  }

  get signal(): AbortSignal {
    return this.ac.signal;
  }

  async send(msg: StreamMessage): Promise<void> {
    if (this.ac.signal.aborted) throw errCanceled("stream is closed");
    await this.call.send({ type_url: msg.typeUrl, value: Buffer.from(msg.value.buffer, msg.value.byteOffset, msg.value.byteLength) });
  }

  recv(): Promise<StreamMessage | undefined> {
    const next = this.reading.then(async () => {
      const r = await this.it.next();
      if (r.done) return undefined;
      return { typeUrl: String(r.value.type_url ?? ""), value: r.value.value as Buffer };
    });
    this.reading = next.catch(() => undefined);
    return next;
  }

  /** Half-close: tell the server no more messages come from here. */
  closeSend(): void {
    if (!this.halfClosed) {
      this.halfClosed = true;
      this.call.end();
    }
  }

  async close(): Promise<void> {
    if (this.ac.signal.aborted) return;
    this.ac.abort(errCanceled("stream closed"));
    this.call.cancel();
  }

  async init(id: string): Promise<void> {
    await this.send(any(StreamTypeUrls.StreamInit, { id }));
    const ack = await this.recv();
    if (!ack) throw errFailedPrecondition(`stream ${id}: closed before the init ack`);
    if (ack.typeUrl.replace(/^.*\//, "") !== StreamTypeUrls.Empty) throw errFailedPrecondition(`stream ${id}: unexpected init ack ${ack.typeUrl}`);
  }
}

export type { ClientStream };

/** Open a side-channel stream with `id` on the Streaming service over `channel`. */
export async function openStream(ctx: CallContext, channel: Channel, id: string): Promise<ClientStream> {
  const rpc = new RpcClient(channel, STREAMING_SERVICE);
  const s = new ClientStream(rpc.bidi(ctx, "Stream"));
  try {
    await s.init(id);
  } catch (e) {
    await s.close();
    throw e;
  }
  return s;
}

/**
 * Receive a byte stream: grant credit (WindowUpdate) ahead of the data and yield every Data payload
 * until the sender half-closes. The outstanding credit is kept between `window - WINDOW_UNIT` and `window`.
 */
export async function* receiveBytes(stream: TransferStream, window = BYTE_WINDOW): AsyncGenerator<Buffer> {
  let granted = 0;
  let received = 0;
  const grant = async (n: number): Promise<void> => {
    granted += n;
    await stream.send(any(StreamTypeUrls.WindowUpdate, { update: n }));
  };
  await grant(window);
  for (;;) {
    const m = await stream.recv();
    if (!m) return;
    if (m.typeUrl.replace(/^.*\//, "") !== StreamTypeUrls.Data) continue;
    const d = decode<{ data: Buffer }>(StreamTypeUrls.Data, m.value).data;
    received += d.length;
    if (d.length) yield d;
    const outstanding = granted - received;
    // The sender may have sent its last bytes and ended the call already: a grant it no longer needs
    // fails, and the next recv() tells how the stream ended.
    if (outstanding < window - WINDOW_UNIT) await grant(Math.ceil((window - outstanding) / WINDOW_UNIT) * WINDOW_UNIT).catch(() => undefined);
  }
}

/**
 * Send a byte stream: wait for credit, then send Data chunks of at most MAX_DATA_CHUNK bytes within it.
 * The caller half-closes (client) or closes (server) the stream afterwards.
 */
export async function sendBytes(stream: TransferStream, source: AsyncIterable<Buffer | Uint8Array>): Promise<void> {
  let credit = 0;
  let wake: (() => void) | undefined;
  let peerDone = false;
  let peerErr: unknown;
  const reader = (async () => {
    try {
      for (;;) {
        const m = await stream.recv();
        if (!m) break;
        if (m.typeUrl.replace(/^.*\//, "") !== StreamTypeUrls.WindowUpdate) continue;
        credit += decode<{ update: number }>(StreamTypeUrls.WindowUpdate, m.value).update;
        wake?.();
      }
    } catch (e) {
      peerErr = e;
    }
    peerDone = true;
    wake?.();
  })();
  const waitCredit = async (): Promise<void> => {
    while (credit <= 0) {
      if (peerDone || stream.signal.aborted) throw peerErr ?? errCanceled("byte stream receiver went away");
      await new Promise<void>((r) => (wake = r));
      wake = undefined;
    }
  };
  for await (const c of source) {
    let buf = Buffer.isBuffer(c) ? c : Buffer.from(c.buffer, c.byteOffset, c.byteLength);
    while (buf.length) {
      await waitCredit();
      const n = Math.min(buf.length, MAX_DATA_CHUNK, credit);
      credit -= n;
      await stream.send(any(StreamTypeUrls.Data, { data: buf.subarray(0, n) }));
      buf = buf.subarray(n);
    }
  }
  void reader;
}

/** Answer AuthRequests on `stream` with `fn` until the server closes it. */
export async function serveCredentials(stream: TransferStream, fn: (req: { host: string; reference: string; wwwAuthenticate: string[] }) => Promise<RegistryCredentials | undefined>): Promise<void> {
  for (;;) {
    const m = await stream.recv().catch(() => undefined);
    if (!m) return;
    if (m.typeUrl.replace(/^.*\//, "") !== StreamTypeUrls.AuthRequest) continue;
    const req = decode<{ host: string; reference: string; wwwauthenticate: string[] }>(StreamTypeUrls.AuthRequest, m.value);
    const c = await fn({ host: req.host, reference: req.reference, wwwAuthenticate: req.wwwauthenticate ?? [] }).catch(() => undefined);
    await stream.send(any(StreamTypeUrls.AuthResponse, authResponseToProto(c)));
  }
}

const AUTH_TYPES = { none: 0, credentials: 1, refresh: 2, header: 3 } as const;

export function authResponseToProto(c: RegistryCredentials | undefined): Input["containerd.types.transfer.AuthResponse"] {
  if (!c) return { authType: 0 };
  return { authType: AUTH_TYPES[c.type], secret: c.secret ?? "", username: c.username ?? "", ...(c.expireAt ? { expire_at: toTimestamp(c.expireAt) } : {}) };
}

export function authResponseFromProto(m: { authType?: number; secret?: string; username?: string; expire_at?: unknown }): RegistryCredentials {
  const type = (["none", "credentials", "refresh", "header"] as const)[Number(m.authType ?? 0)] ?? "none";
  const exp = fromTimestamp(m.expire_at as never);
  return { type, ...(m.username ? { username: m.username } : {}), ...(m.secret ? { secret: m.secret } : {}), ...(exp && exp.getTime() > 0 ? { expireAt: exp } : {}) };
}

export function platformToProto(p: Platform): Input["containerd.types.Platform"] {
  return { os: p.os, architecture: p.architecture, variant: p.variant ?? "", os_version: p.osVersion ?? "", os_features: p.osFeatures ?? [] };
}

export function platformFromProto(m: Msg | null | undefined): Platform {
  return {
    os: String(m?.os ?? ""), architecture: String(m?.architecture ?? ""),
    ...(m?.variant ? { variant: String(m.variant) } : {}),
    ...(m?.os_version ? { osVersion: String(m.os_version) } : {}),
    ...((m?.os_features as string[] | undefined)?.length ? { osFeatures: m!.os_features as string[] } : {}),
  };
}

export function descriptorToProto(d: Descriptor): Input["containerd.types.Descriptor"] {
  return { media_type: d.mediaType, digest: d.digest, size: d.size, annotations: d.annotations ?? {} };
}

export function progressToProto(p: ProgressEvent): Input["containerd.types.transfer.Progress"] {
  return { event: p.event, name: p.name ?? "", parents: p.parents ?? [], progress: p.progress ?? 0, total: p.total ?? 0, ...(p.desc ? { desc: descriptorToProto(p.desc) } : {}) };
}

export function progressFromProto(m: Msg): ProgressEvent {
  const d = m.desc as Msg | null | undefined;
  return {
    event: String(m.event ?? ""), name: String(m.name ?? ""), parents: (m.parents as string[]) ?? [],
    progress: Number(m.progress ?? 0), total: Number(m.total ?? 0),
    ...(d && d.digest ? { desc: { mediaType: String(d.media_type ?? ""), digest: String(d.digest), size: Number(d.size ?? 0), annotations: (d.annotations as Record<string, string>) ?? {} } } : {}),
  };
}

// ---- request objects ----

export interface RegistryOptions {
  headers?: Record<string, string>;
  hostDir?: string;
  /** "http" for plain HTTP (ctr's --plain-http). */
  defaultScheme?: string;
  httpDebug?: number;
  credentials?: (req: { host: string; reference: string; wwwAuthenticate: string[] }) => Promise<RegistryCredentials | undefined>;
  /** With httpDebug: receives the service's HTTP debug output (over a logs stream). */
  logs?: (chunk: Buffer) => void;
}

export interface ImageStoreOptions {
  name?: string;
  labels?: Record<string, string>;
  platforms?: Platform[];
  allMetadata?: boolean;
  manifestLimit?: number;
  extraReferences?: Partial<ImageReferenceSpec>[];
  unpacks?: UnpackConfiguration[];
}

export function imageStoreAny(o: ImageStoreOptions): { type_url: string; value: Buffer } {
  return {
    type_url: TransferTypeUrls.ImageStore,
    value: encode(TransferTypeUrls.ImageStore, {
      name: o.name ?? "", labels: o.labels ?? {}, platforms: (o.platforms ?? []).map(platformToProto),
      all_metadata: !!o.allMetadata, manifest_limit: o.manifestLimit ?? 0,
      extra_references: (o.extraReferences ?? []).map((r) => ({ name: r.name ?? "", is_prefix: !!r.isPrefix, allow_overwrite: !!r.allowOverwrite, add_digest: !!r.addDigest, skip_named_digest: !!r.skipNamedDigest })),
      unpacks: (o.unpacks ?? []).map((u) => ({ platform: platformToProto(u.platform), snapshotter: u.snapshotter })),
    }),
  };
}

export function registryAny(reference: string, o: RegistryOptions, authStream = "", logsStream = ""): { type_url: string; value: Buffer } {
  return {
    type_url: TransferTypeUrls.OCIRegistry,
    value: encode(TransferTypeUrls.OCIRegistry, {
      reference,
      resolver: { auth_stream: authStream, headers: o.headers ?? {}, host_dir: o.hostDir ?? "", default_scheme: o.defaultScheme ?? "", http_debug: o.httpDebug ?? 0, logs_stream: logsStream },
    }),
  };
}

export interface ExportOptions {
  mediaType?: string;
  platforms?: Platform[];
  allPlatforms?: boolean;
  skipCompatibilityManifest?: boolean;
  skipNonDistributable?: boolean;
}

export interface TransferCallOptions {
  progress?: (p: ProgressEvent) => void;
}

/** The Transfer API at `address` (the gateway's socket, or the transfer process). */
export class TransferClient {
  private readonly rpc: RpcClient<typeof TRANSFER_SERVICE>;

  constructor(private readonly channel: Channel) {
    this.rpc = new RpcClient(channel, TRANSFER_SERVICE);
  }

  openStream(ctx: CallContext, prefix: string): Promise<ClientStream & { id: string }> {
    const id = streamId(prefix);
    return openStream(ctx, this.channel, id).then((s) => Object.assign(s, { id }));
  }

  /** Call Transfer with raw Any source and destination, consuming a progress stream if asked. */
  async transfer(ctx: CallContext, source: { type_url: string; value: Buffer }, destination: { type_url: string; value: Buffer }, opts: TransferCallOptions = {}): Promise<void> {
    let progress: (ClientStream & { id: string }) | undefined;
    let pump: Promise<void> | undefined;
    if (opts.progress) {
      progress = await this.openStream(ctx, "progress");
      const fn = opts.progress;
      const ps = progress;
      pump = (async () => {
        for (;;) {
          const m = await ps.recv().catch(() => undefined);
          if (!m) return;
          if (m.typeUrl.replace(/^.*\//, "") !== StreamTypeUrls.Progress) continue;
          fn(progressFromProto(decode(StreamTypeUrls.Progress, m.value)));
        }
      })();
    }
    try {
      await this.rpc.unary(ctx, "Transfer", { source, destination, options: { progress_stream: progress?.id ?? "" } });
      // The server closes the progress stream when the transfer ends; drain what is left.
      if (pump) await waitAtMost(pump, 2000);
    } finally {
      await progress?.close();
    }
  }

  private async withAuth<T>(ctx: CallContext, o: RegistryOptions, fn: (authId: string, logsId: string) => Promise<T>): Promise<T> {
    const logs = o.httpDebug && o.logs ? await this.openStream(ctx, "http-debug-logs") : undefined;
    const reading = logs ? (async () => {
      for await (const c of receiveBytes(logs)) o.logs!(c);
    })().catch(() => undefined) : undefined;
    try {
      if (!o.credentials) return await fn("", logs?.id ?? "");
      const s = await this.openStream(ctx, "creds");
      const served = serveCredentials(s, o.credentials);
      try {
        return await fn(s.id, logs?.id ?? "");
      } finally {
        await s.close();
        await served.catch(() => undefined);
      }
    } finally {
      if (reading) await waitAtMost(reading, 500);
      await logs?.close();
    }
  }

  pull(ctx: CallContext, reference: string, store: ImageStoreOptions, o: RegistryOptions = {}, opts: TransferCallOptions = {}): Promise<void> {
    return this.withAuth(ctx, o, (auth, logs) => this.transfer(ctx, registryAny(reference, o, auth, logs), imageStoreAny({ name: reference, ...store }), opts));
  }

  push(ctx: CallContext, image: string, reference: string, o: RegistryOptions = {}, store: ImageStoreOptions = {}, opts: TransferCallOptions = {}): Promise<void> {
    return this.withAuth(ctx, o, (auth, logs) => this.transfer(ctx, imageStoreAny({ name: image, ...store }), registryAny(reference, o, auth, logs), opts));
  }

  tag(ctx: CallContext, source: string, target: string, opts: TransferCallOptions = {}): Promise<void> {
    return this.transfer(ctx, imageStoreAny({ name: source }), imageStoreAny({ name: target }), opts);
  }

  /** Import an archive read from `input` (OCI layout or docker save tar). */
  async importArchive(ctx: CallContext, input: Readable | AsyncIterable<Buffer>, store: ImageStoreOptions, o: { mediaType?: string; forceCompress?: boolean } = {}, opts: TransferCallOptions = {}): Promise<void> {
    const s = await this.openStream(ctx, "import");
    const sending = sendBytes(s, input as AsyncIterable<Buffer>).then(() => s.closeSend());
    sending.catch(() => undefined);
    try {
      const src = { type_url: TransferTypeUrls.ImageImportStream, value: encode(TransferTypeUrls.ImageImportStream, { stream: s.id, media_type: o.mediaType ?? "", force_compress: !!o.forceCompress }) };
      await this.transfer(ctx, src, imageStoreAny(store), opts);
      await sending;
    } finally {
      await s.close();
    }
  }

  /** Export `images` (the first is `name`, the rest extra references) as an OCI archive into `out`. */
  async exportArchive(ctx: CallContext, images: string[], out: Writable, o: ExportOptions = {}, opts: TransferCallOptions = {}): Promise<void> {
    const s = await this.openStream(ctx, "export");
    const receiving = (async () => {
      for await (const chunk of receiveBytes(s)) {
        if (!out.write(chunk)) await new Promise<void>((r) => out.once("drain", () => r()));
      }
    })();
    receiving.catch(() => undefined);
    try {
      const dst = {
        type_url: TransferTypeUrls.ImageExportStream,
        value: encode(TransferTypeUrls.ImageExportStream, {
          stream: s.id, media_type: o.mediaType ?? "", platforms: (o.platforms ?? []).map(platformToProto), all_platforms: !!o.allPlatforms,
          skip_compatibility_manifest: !!o.skipCompatibilityManifest, skip_non_distributable: !!o.skipNonDistributable,
        }),
      };
      const [first, ...rest] = images;
      await this.transfer(ctx, imageStoreAny({ name: first ?? "", extraReferences: rest.map((name) => ({ name })) }), dst, opts);
      await receiving;
    } finally {
      await s.close();
    }
  }
}
