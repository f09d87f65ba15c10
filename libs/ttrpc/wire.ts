/**
 * ttrpc's wire format: 10-byte frame headers (big-endian length, stream id, type, flags) and the
 * `ttrpc.Request` / `ttrpc.Response` envelopes. The envelopes are encoded by hand with protobufjs's
 * minimal reader/writer, so a process (a shim) can speak ttrpc without loading any .proto file.
 */
import { Reader, Writer } from "protobufjs/minimal";

export const HEADER_LENGTH = 10;
/** Largest frame payload either side accepts (4 MiB). */
export const MAX_MESSAGE_LENGTH = 4 << 20;

export const MessageType = { Request: 0x01, Response: 0x02, Data: 0x03 } as const;
export type MessageType = (typeof MessageType)[keyof typeof MessageType];

export const Flags = { RemoteClosed: 0x01, RemoteOpen: 0x02, NoData: 0x04 } as const;

/** gRPC status codes, as ttrpc carries them. */
export const Code = {
  OK: 0,
  Canceled: 1,
  Unknown: 2,
  InvalidArgument: 3,
  DeadlineExceeded: 4,
  NotFound: 5,
  AlreadyExists: 6,
  PermissionDenied: 7,
  ResourceExhausted: 8,
  FailedPrecondition: 9,
  Aborted: 10,
  OutOfRange: 11,
  Unimplemented: 12,
  Internal: 13,
  Unavailable: 14,
  DataLoss: 15,
  Unauthenticated: 16,
} as const;

export interface Frame {
  streamId: number;
  type: number;
  flags: number;
  data: Buffer;
}

export function encodeFrame(streamId: number, type: number, flags: number, data: Uint8Array = Buffer.alloc(0)): Buffer {
  const out = Buffer.allocUnsafe(HEADER_LENGTH + data.length);
  out.writeUInt32BE(data.length, 0);
  out.writeUInt32BE(streamId >>> 0, 4);
  out.writeUInt8(type, 8);
  out.writeUInt8(flags, 9);
  out.set(data, HEADER_LENGTH);
  return out;
}

/** What the reader produced: a whole frame, or the header of a frame too large to accept (its bytes are skipped). */
export type ReadResult = { kind: "frame"; frame: Frame } | { kind: "oversize"; streamId: number; type: number; length: number };

/**
 * Incremental frame parser. Feed it socket chunks; it yields complete frames. A frame longer than
 * `max` is reported once as `oversize` and its payload discarded as it arrives.
 */
export class FrameReader {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private skip = 0;

  constructor(private readonly max = MAX_MESSAGE_LENGTH) {}

  push(chunk: Buffer): ReadResult[] {
    const out: ReadResult[] = [];
    if (this.skip > 0) {
      const n = Math.min(this.skip, chunk.length);
      this.skip -= n;
      chunk = chunk.subarray(n);
    }
    if (chunk.length) {
      this.chunks.push(chunk);
      this.buffered += chunk.length;
    }
    for (;;) {
      if (this.skip > 0) {
        const all = this.take(Math.min(this.skip, this.buffered));
        this.skip -= all.length;
        if (this.skip > 0) break;
      }
      if (this.buffered < HEADER_LENGTH) break;
      const head = this.peek(HEADER_LENGTH);
      const length = head.readUInt32BE(0);
      const streamId = head.readUInt32BE(4);
      const type = head.readUInt8(8);
      const flags = head.readUInt8(9);
      if (length > this.max) {
        this.take(HEADER_LENGTH);
        out.push({ kind: "oversize", streamId, type, length });
        this.skip = length;
        continue;
      }
      if (this.buffered < HEADER_LENGTH + length) break;
      this.take(HEADER_LENGTH);
      out.push({ kind: "frame", frame: { streamId, type, flags, data: this.take(length) } });
    }
    return out;
  }

  private peek(n: number): Buffer {
    if (this.chunks[0]!.length >= n) return this.chunks[0]!.subarray(0, n);
    const joined = Buffer.concat(this.chunks);
    this.chunks = [joined];
    return joined.subarray(0, n);
  }

  private take(n: number): Buffer {
    if (n === 0) return Buffer.alloc(0);
    const first = this.chunks[0]!;
    let out: Buffer;
    if (first.length >= n) {
      out = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
    } else {
      const joined = Buffer.concat(this.chunks);
      out = joined.subarray(0, n);
      this.chunks = joined.length > n ? [joined.subarray(n)] : [];
    }
    this.buffered -= n;
    return out;
  }
}

/** ttrpc metadata: keys are lower-cased and multi-valued. */
export type Metadata = Record<string, string[]>;

export interface RequestEnvelope {
  service: string;
  method: string;
  payload: Buffer;
  /** Remaining time in nanoseconds, 0 = no deadline. */
  timeoutNano: number;
  metadata: Metadata;
}

export interface StatusAny {
  typeUrl: string;
  value: Buffer;
}

export interface Status {
  code: number;
  message: string;
  details: StatusAny[];
}

export interface ResponseEnvelope {
  /** Absent on success. */
  status?: Status;
  payload: Buffer;
}

export function encodeRequest(r: RequestEnvelope): Buffer {
  const w = Writer.create();
  if (r.service) w.uint32((1 << 3) | 2).string(r.service);
  if (r.method) w.uint32((2 << 3) | 2).string(r.method);
  if (r.payload.length) w.uint32((3 << 3) | 2).bytes(r.payload);
  if (r.timeoutNano) w.uint32(4 << 3).int64(r.timeoutNano);
  for (const [key, values] of Object.entries(r.metadata)) {
    for (const value of values) {
      w.uint32((5 << 3) | 2).fork();
      w.uint32((1 << 3) | 2).string(key);
      w.uint32((2 << 3) | 2).string(value);
      w.ldelim();
    }
  }
  return Buffer.from(w.finish());
}

function int64ToNumber(v: unknown): number {
  if (typeof v === "number") return v;
  const l = v as { low: number; high: number };
  return l.high * 4294967296 + (l.low >>> 0);
}

function skipUnknown(r: Reader, tag: number): void {
  r.skipType(tag & 7);
}

export function decodeRequest(buf: Uint8Array): RequestEnvelope {
  const r = Reader.create(buf);
  const out: RequestEnvelope = { service: "", method: "", payload: Buffer.alloc(0), timeoutNano: 0, metadata: {} };
  while (r.pos < r.len) {
    const tag = r.uint32();
    switch (tag >>> 3) {
      case 1: out.service = r.string(); break;
      case 2: out.method = r.string(); break;
      case 3: out.payload = Buffer.from(r.bytes()); break;
      case 4: out.timeoutNano = int64ToNumber(r.int64()); break;
      case 5: {
        const end = r.uint32() + r.pos;
        let key = "";
        let value = "";
        while (r.pos < end) {
          const t = r.uint32();
          if (t >>> 3 === 1) key = r.string();
          else if (t >>> 3 === 2) value = r.string();
          else skipUnknown(r, t);
        }
        key = key.toLowerCase();
        (out.metadata[key] ??= []).push(value);
        break;
      }
      default: skipUnknown(r, tag);
    }
  }
  return out;
}

function encodeStatus(w: Writer, s: Status): void {
  if (s.code) w.uint32(1 << 3).int32(s.code);
  if (s.message) w.uint32((2 << 3) | 2).string(s.message);
  for (const d of s.details) {
    w.uint32((3 << 3) | 2).fork();
    if (d.typeUrl) w.uint32((1 << 3) | 2).string(d.typeUrl);
    if (d.value.length) w.uint32((2 << 3) | 2).bytes(d.value);
    w.ldelim();
  }
}

export function encodeResponse(r: ResponseEnvelope): Buffer {
  const w = Writer.create();
  if (r.status && r.status.code !== Code.OK) {
    w.uint32((1 << 3) | 2).fork();
    encodeStatus(w, r.status);
    w.ldelim();
  }
  if (r.payload.length) w.uint32((2 << 3) | 2).bytes(r.payload);
  return Buffer.from(w.finish());
}

function decodeStatus(r: Reader, end: number): Status {
  const s: Status = { code: 0, message: "", details: [] };
  while (r.pos < end) {
    const tag = r.uint32();
    switch (tag >>> 3) {
      case 1: s.code = r.int32(); break;
      case 2: s.message = r.string(); break;
      case 3: {
        const dend = r.uint32() + r.pos;
        const d: StatusAny = { typeUrl: "", value: Buffer.alloc(0) };
        while (r.pos < dend) {
          const t = r.uint32();
          if (t >>> 3 === 1) d.typeUrl = r.string();
          else if (t >>> 3 === 2) d.value = Buffer.from(r.bytes());
          else skipUnknown(r, t);
        }
        s.details.push(d);
        break;
      }
      default: skipUnknown(r, tag);
    }
  }
  return s;
}

export function decodeResponse(buf: Uint8Array): ResponseEnvelope {
  const r = Reader.create(buf);
  const out: ResponseEnvelope = { payload: Buffer.alloc(0) };
  while (r.pos < r.len) {
    const tag = r.uint32();
    switch (tag >>> 3) {
      case 1: {
        const end = r.uint32() + r.pos;
        out.status = decodeStatus(r, end);
        break;
      }
      case 2: out.payload = Buffer.from(r.bytes()); break;
      default: skipUnknown(r, tag);
    }
  }
  return out;
}

/**
 * A ttrpc address as a `net.connect`/`listen` path: `unix:///abs`, `unix:/abs`, a bare absolute path,
 * or (containerd's rule) anything without `unix://` as an abstract socket (`\0` + address).
 */
export function socketPath(address: string): string {
  if (address.startsWith("unix://")) return address.slice("unix://".length);
  if (address.startsWith("unix:")) return address.slice("unix:".length);
  if (address.startsWith("ttrpc+unix://")) return address.slice("ttrpc+unix://".length);
  if (address.startsWith("/")) return address;
  return "\0" + address;
}
