/**
 * Content Read served by the gateway from the blob files, read-only, when the content process runs on
 * the same host. `ctr content get` (and every remote ReaderAt) reads a blob in 32 KiB windows, one Read
 * call each, so a 1 GiB blob is 32,768 calls; through the gateway each would cross two processes.
 *
 * The content process stays the owner and the judge: a (namespace, digest) pair is served here only
 * after the content process itself answered a Read of it in that namespace, for at most `grantMs`
 * after that answer (then the next call goes to the owner again), and a /content/delete or
 * /namespaces/delete event withdraws it when it arrives. A blob whose file is gone from disk is never
 * served here (checked on every call), so the only window left is a blob deleted in one namespace
 * while another still holds it, for at most `grantMs` or until the event arrives.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import * as http2 from "node:http2";
import { errOutOfRange, toGrpc } from "../../../libs/errdefs";
import type { Envelope } from "../../../libs/events";
import { encodeStatusMessage, GRPC_CONTENT_TYPE, respondStatusOnly, writeWithDrain } from "../../../libs/grpc/wire";
import { encodeFrame } from "../../../libs/grpc/server";
import { DECODE_OPTIONS, lookupType, unpackAny, validateWire } from "../../../libs/proto";

export const CONTENT_READ_PATH = "/containerd.services.content.v1.Content/Read";
const CHUNK = 1 << 20;
const FD_IDLE_MS = 5000;

interface OpenFd {
  fd: number;
  size: number;
  refs: number;
  lastUsed: number;
  closed: boolean;
}

export interface ReadRequest {
  digest: string;
  offset: number;
  size: number;
}

export class DirectContentReads {
  private readonly grants = new Map<string, number>();
  private readonly fds = new Map<string, OpenFd>();
  private readonly reqT = lookupType("containerd.services.content.v1.ReadContentRequest");
  private readonly resT = lookupType("containerd.services.content.v1.ReadContentResponse");
  private readonly sweeper: NodeJS.Timeout;

  constructor(private readonly contentRoot: string, private readonly grantMs = 1000) {
    this.sweeper = setInterval(() => this.sweep(), FD_IDLE_MS);
    this.sweeper.unref();
  }

  /** The request, if it is a well-formed ReadContentRequest for a sha256 blob (else the owner answers). */
  parse(body: Buffer): ReadRequest | undefined {
    if (body.length < 5 || body[0] !== 0 || body.readUInt32BE(1) !== body.length - 5) return undefined;
    try {
      const b = body.subarray(5);
      validateWire(this.reqT, b);
      const m = this.reqT.toObject(this.reqT.decode(b), DECODE_OPTIONS) as { digest?: string; offset?: number | string; size?: number | string };
      const digest = String(m.digest ?? "");
      if (!/^sha256:[a-f0-9]{64}$/.test(digest)) return undefined;
      return { digest, offset: Number(m.offset ?? 0), size: Number(m.size ?? 0) };
    } catch {
      return undefined;
    }
  }

  granted(namespace: string, digest: string): boolean {
    const until = this.grants.get(`${namespace}\0${digest}`);
    return until !== undefined && until > Date.now();
  }

  /** The owner answered a Read of `digest` in `namespace`. */
  grant(namespace: string, digest: string): void {
    this.grants.set(`${namespace}\0${digest}`, Date.now() + this.grantMs);
  }

  /** Withdraw grants on the owner's events. */
  onEvent(env: Envelope): void {
    if (env.topic === "/content/delete") {
      try {
        const { digest } = unpackAny<{ digest: string }>(env.event);
        this.grants.delete(`${env.namespace}\0${digest}`);
      } catch {
        this.grants.clear();
      }
    } else if (env.topic === "/namespaces/delete") {
      for (const k of this.grants.keys()) if (k.startsWith(`${env.namespace}\0`)) this.grants.delete(k);
    }
  }

  private async open(digest: string): Promise<OpenFd> {
    const cur = this.fds.get(digest);
    if (cur && !cur.closed && fs.fstatSync(cur.fd).nlink === 0) {
      // The blob was removed from disk: never serve it from a descriptor kept open.
      this.fds.delete(digest);
      cur.closed = true;
      if (cur.refs === 0) fs.close(cur.fd, () => undefined);
      throw Object.assign(new Error("blob removed"), { code: "ENOENT" });
    }
    if (cur && !cur.closed) {
      cur.refs++;
      cur.lastUsed = Date.now();
      return cur;
    }
    const file = path.join(this.contentRoot, "blobs", "sha256", digest.slice("sha256:".length));
    const fd = await new Promise<number>((resolve, reject) => fs.open(file, fs.constants.O_RDONLY, (err, d) => (err ? reject(err) : resolve(d))));
    let size: number;
    try {
      size = fs.fstatSync(fd).size;
    } catch (e) {
      fs.closeSync(fd);
      throw e;
    }
    const entry: OpenFd = { fd, size, refs: 1, lastUsed: Date.now(), closed: false };
    const again = this.fds.get(digest);
    if (again && !again.closed) {
      fs.closeSync(fd);
      again.refs++;
      return again;
    }
    this.fds.set(digest, entry);
    return entry;
  }

  private release(e: OpenFd): void {
    e.refs--;
    e.lastUsed = Date.now();
    if (e.closed && e.refs === 0) fs.close(e.fd, () => undefined);
  }

  private sweep(): void {
    const now = Date.now();
    for (const [d, e] of this.fds) {
      if (e.refs === 0 && now - e.lastUsed > FD_IDLE_MS) {
        e.closed = true;
        this.fds.delete(d);
        fs.close(e.fd, () => undefined);
      }
    }
    for (const [k, until] of this.grants) if (until <= now) this.grants.delete(k);
  }

  /**
   * Serve one Read. Resolves with the gRPC status sent, or undefined when the blob's file is not
   * there (nothing was sent; the owner must answer).
   */
  async serve(down: http2.ServerHttp2Stream, req: ReadRequest): Promise<{ code: number; message: string } | undefined> {
    let f: OpenFd;
    try {
      f = await this.open(req.digest);
    } catch {
      return undefined;
    }
    try {
      let offset = Math.max(0, req.offset);
      let size = req.size;
      if (offset > f.size) {
        const st = toGrpc(errOutOfRange(`read past object length ${f.size} bytes`));
        respondStatusOnly(down, st.code, st.details);
        return { code: st.code, message: st.details };
      }
      if (size <= 0 || offset + size > f.size) size = f.size - offset;
      down.respond({ [http2.constants.HTTP2_HEADER_STATUS]: 200, "content-type": GRPC_CONTENT_TYPE }, { waitForTrailers: true });
      // The last message goes out with the end of the stream (for a small blob: headers and DATA in one write).
      let final: Buffer | undefined;
      while (size > 0) {
        if (down.destroyed || down.closed) return { code: 1, message: "call canceled by client" };
        const buf = Buffer.allocUnsafe(Math.min(CHUNK, size));
        // A blob's bytes come from the page cache almost always: a synchronous pread of at most 1 MiB
        // costs less than the thread-pool round trip of an asynchronous one.
        const bytesRead = fs.readSync(f.fd, buf, 0, buf.length, offset);
        if (bytesRead === 0) break;
        const frame = encodeFrame(this.resT, { offset, data: buf.subarray(0, bytesRead) });
        offset += bytesRead;
        size -= bytesRead;
        if (size === 0) {
          final = frame;
          break;
        }
        // A closed stream is noticed at the top of the loop.
        await writeWithDrain(down, frame, () => undefined).catch(() => undefined);
      }
      const status = size > 0 ? { code: 11, message: `unexpected end of blob ${req.digest} at ${offset}` } : { code: 0, message: "" };
      down.once("wantTrailers", () => {
        try {
          down.sendTrailers(status.code === 0 ? { "grpc-status": "0" } : { "grpc-status": String(status.code), "grpc-message": encodeStatusMessage(status.message) });
        } catch {
          /* the client is gone */
        }
      });
      if (!down.destroyed && !down.closed) down.end(final);
      return status;
    } finally {
      this.release(f);
    }
  }

  close(): void {
    clearInterval(this.sweeper);
    for (const e of this.fds.values()) {
      e.closed = true;
      fs.close(e.fd, () => undefined);
    }
    this.fds.clear();
    this.grants.clear();
  }
}
