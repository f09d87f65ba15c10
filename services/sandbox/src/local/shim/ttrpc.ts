/**
 * A minimal unary ttrpc client (the wire protocol of ../shared/REFERENCE.md part 2 A): 10-byte frame
 * headers, `ttrpc.Request` / `ttrpc.Response` envelopes, odd client stream ids, responses matched by
 * stream id. Enough to drive a shim's containerd.runtime.sandbox.v1.Sandbox service.
 * (To be replaced by the shared libs/ttrpc client once it lands.)
 */
import * as net from "node:net";
import type { CallContext } from "../../../../../libs/context";
import { ErrorCodes, errUnavailable, FlotillaError, type ErrorCode } from "../../../../../libs/errdefs";
import { decode, encode, lookupType } from "../../../../../libs/proto";

export const HEADER = 10;
export const MAX_FRAME = 4 << 20;
export const TYPE_REQUEST = 1;
export const TYPE_RESPONSE = 2;
/** The namespace header over ttrpc. */
export const TTRPC_NAMESPACE_KEY = "containerd-namespace-ttrpc";

export function frame(streamId: number, type: number, data: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(HEADER + data.length);
  out.writeUInt32BE(data.length, 0);
  out.writeUInt32BE(streamId >>> 0, 4);
  out.writeUInt8(type, 8);
  out.writeUInt8(0, 9);
  out.set(data, HEADER);
  return out;
}

/** Splits a byte stream into frames. */
export class Deframer {
  private buf: Buffer = Buffer.alloc(0);
  push(chunk: Buffer): { streamId: number; type: number; flags: number; data: Buffer }[] {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    const out = [];
    while (this.buf.length >= HEADER) {
      const len = this.buf.readUInt32BE(0);
      if (len > MAX_FRAME) throw new Error(`ttrpc frame of ${len} bytes exceeds the maximum`);
      if (this.buf.length < HEADER + len) break;
      out.push({ streamId: this.buf.readUInt32BE(4), type: this.buf.readUInt8(8), flags: this.buf.readUInt8(9), data: this.buf.subarray(HEADER, HEADER + len) });
      this.buf = this.buf.subarray(HEADER + len);
    }
    return out;
  }
}

const GRPC_TO_CODE: Record<number, ErrorCode> = {
  1: ErrorCodes.Canceled, 2: ErrorCodes.Unknown, 3: ErrorCodes.InvalidArgument, 4: ErrorCodes.DeadlineExceeded, 5: ErrorCodes.NotFound,
  6: ErrorCodes.AlreadyExists, 7: ErrorCodes.PermissionDenied, 8: ErrorCodes.ResourceExhausted, 9: ErrorCodes.FailedPrecondition,
  10: ErrorCodes.Aborted, 11: ErrorCodes.OutOfRange, 12: ErrorCodes.NotImplemented, 13: ErrorCodes.Internal, 14: ErrorCodes.Unavailable,
  15: ErrorCodes.DataLoss, 16: ErrorCodes.Unauthenticated,
};

/** A ttrpc status as a native error (conflict / not modified recovered from the message suffix, as errgrpc does). */
export function statusError(code: number, message: string): FlotillaError {
  let c = GRPC_TO_CODE[code] ?? ErrorCodes.Unknown;
  if (code === 9 && message.endsWith(": conflict")) c = ErrorCodes.Conflict;
  if (code === 9 && message.endsWith(": not modified")) c = ErrorCodes.NotModified;
  return new FlotillaError(c, c === ErrorCodes.Unknown || message.endsWith(`: ${c}`) ? message : `${message}: ${c}`);
}

/** The unix socket path of a shim address (`unix:///path`, `unix:path`, `/path`, or `ttrpc+unix://...`). */
export function socketPathOf(address: string): string {
  const a = address.replace(/^ttrpc\+/, "");
  if (a.startsWith("unix://")) return a.slice("unix://".length);
  if (a.startsWith("unix:")) return a.slice("unix:".length);
  return a;
}

export class TtrpcClient {
  private sock?: net.Socket;
  private connecting?: Promise<net.Socket>;
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (b: Buffer) => void; reject: (e: unknown) => void; res: string }>();

  constructor(readonly address: string, private readonly connectTimeoutMs = 10000) {}

  private connect(): Promise<net.Socket> {
    if (this.sock && !this.sock.destroyed) return Promise.resolve(this.sock);
    if (this.connecting) return this.connecting;
    this.connecting = new Promise<net.Socket>((resolve, reject) => {
      const s = net.connect({ path: socketPathOf(this.address) });
      const t = setTimeout(() => s.destroy(new Error("connect timeout")), this.connectTimeoutMs);
      const deframer = new Deframer();
      s.once("connect", () => {
        clearTimeout(t);
        this.sock = s;
        resolve(s);
      });
      s.on("data", (chunk: Buffer) => {
        let frames;
        try {
          frames = deframer.push(chunk);
        } catch (e) {
          s.destroy(e as Error);
          return;
        }
        for (const f of frames) {
          if (f.type !== TYPE_RESPONSE) continue;
          const p = this.pending.get(f.streamId);
          if (!p) continue;
          this.pending.delete(f.streamId);
          p.resolve(f.data);
        }
      });
      s.on("error", () => undefined);
      s.on("close", () => {
        clearTimeout(t);
        this.sock = undefined;
        const err = errUnavailable(`ttrpc connection to ${this.address} closed`);
        for (const p of this.pending.values()) p.reject(err);
        this.pending.clear();
        reject(errUnavailable(`ttrpc: cannot connect to ${this.address}`));
      });
    }).finally(() => {
      this.connecting = undefined;
    });
    return this.connecting;
  }

  /** One unary call: `req` and the result are plain objects of the named proto types. */
  async call(ctx: CallContext, service: string, method: string, reqType: string, req: Record<string, unknown>, resType: string): Promise<Record<string, unknown>> {
    const sock = await this.connect();
    const id = this.nextId;
    this.nextId += 2;
    const metadata = ctx.namespace ? [{ key: TTRPC_NAMESPACE_KEY, value: ctx.namespace }] : [];
    const timeoutNano = ctx.deadline ? Math.max(1, ctx.deadline.getTime() - Date.now()) * 1e6 : 0;
    const envelope = encode("ttrpc.Request", { service, method, payload: encode(reqType, req), timeout_nano: timeoutNano, metadata });
    const raw = await new Promise<Buffer>((resolve, reject) => {
      this.pending.set(id, { resolve, reject, res: resType });
      const onAbort = (): void => {
        this.pending.delete(id);
        reject(new FlotillaError(ErrorCodes.Canceled, `ttrpc ${service}/${method}: context canceled`));
      };
      if (ctx.signal.aborted) return onAbort();
      ctx.signal.addEventListener("abort", onAbort, { once: true });
      sock.write(frame(id, TYPE_REQUEST, envelope));
    });
    const resp = decode<{ status?: { code?: number; message?: string } | null; payload?: Buffer }>("ttrpc.Response", raw);
    if (resp.status && resp.status.code) throw statusError(resp.status.code, resp.status.message ?? "");
    return decode(resType, resp.payload ?? Buffer.alloc(0));
  }

  close(): void {
    this.sock?.destroy();
    this.sock = undefined;
  }
}

/** Check the ttrpc envelope types are loaded (fails fast at start-up rather than at the first call). */
export function ttrpcTypesLoaded(): boolean {
  return !!lookupType("ttrpc.Request") && !!lookupType("ttrpc.Response");
}
