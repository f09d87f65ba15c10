/**
 * A server-side websocket (RFC 6455) carrying the kubelet's channel protocol: every message starts
 * with its channel number, one byte (binary protocols) or one digit with the rest base64 (the
 * `base64.*` subprotocols, text frames). Emits "message" (channel, data) and "close"; fragmented
 * messages are joined, pings answered, and nothing larger than 16 MiB is accepted.
 */
import type { Duplex } from "node:stream";
import { UpgradedConn } from "./conn";

const OP = { Continuation: 0, Text: 1, Binary: 2, Close: 8, Ping: 9, Pong: 10 } as const;
const MAX_MESSAGE = 16 << 20;

export class WebSocketConn extends UpgradedConn {
  private buf: Buffer = Buffer.alloc(0);
  private fragments: Buffer[] = [];
  private fragmentOp = 0;
  private closeCode = 1000;

  constructor(socket: Duplex, head: Buffer, readonly base64: boolean, idleTimeoutMs = 0) {
    super(socket, head, idleTimeoutMs);
  }

  protected onBytes(b: Buffer): void {
    if (this.closed) return;
    this.buf = this.buf.length ? Buffer.concat([this.buf, b]) : b;
    for (;;) {
      const f = this.parse();
      if (!f) return;
      if (f === "error") {
        this.closeCode = 1002;
        this.close();
        return;
      }
      this.onFrame(f.fin, f.op, f.payload);
    }
  }

  private parse(): { fin: boolean; op: number; payload: Buffer } | "error" | undefined {
    const b = this.buf;
    if (b.length < 2) return undefined;
    let len = b[1]! & 0x7f;
    let off = 2;
    if (len === 126) {
      if (b.length < 4) return undefined;
      len = b.readUInt16BE(2);
      off = 4;
    } else if (len === 127) {
      if (b.length < 10) return undefined;
      const big = b.readBigUInt64BE(2);
      if (big > BigInt(MAX_MESSAGE)) return "error";
      len = Number(big);
      off = 10;
    }
    const masked = (b[1]! & 0x80) !== 0;
    if (!masked) return "error"; // clients must mask
    if (b.length < off + 4 + len) return undefined;
    const mask = b.subarray(off, off + 4);
    const payload = Buffer.from(b.subarray(off + 4, off + 4 + len));
    for (let i = 0; i < payload.length; i++) payload[i]! ^= mask[i & 3]!;
    this.buf = b.subarray(off + 4 + len);
    return { fin: (b[0]! & 0x80) !== 0, op: b[0]! & 0x0f, payload };
  }

  private onFrame(fin: boolean, op: number, payload: Buffer): void {
    if (op === OP.Close) {
      this.close();
      return;
    }
    if (op === OP.Ping) {
      this.frame(OP.Pong, payload);
      return;
    }
    if (op === OP.Pong) return;
    if (op !== OP.Continuation) {
      this.fragmentOp = op;
      this.fragments = [];
    }
    this.fragments.push(payload);
    if (this.fragments.reduce((n, p) => n + p.length, 0) > MAX_MESSAGE) {
      this.closeCode = 1009;
      return this.close();
    }
    if (!fin) return;
    const msg = Buffer.concat(this.fragments);
    this.fragments = [];
    if (!msg.length) return;
    if (this.base64 || this.fragmentOp === OP.Text) {
      const ch = msg[0]! - 0x30;
      this.emit("message", ch, Buffer.from(msg.subarray(1).toString(), "base64"));
    } else {
      this.emit("message", msg[0]!, msg.subarray(1));
    }
  }

  private frame(op: number, payload: Buffer, cb?: () => void): void {
    let h: Buffer;
    if (payload.length < 126) h = Buffer.from([0x80 | op, payload.length]);
    else if (payload.length < 65536) {
      h = Buffer.alloc(4);
      h[0] = 0x80 | op;
      h[1] = 126;
      h.writeUInt16BE(payload.length, 2);
    } else {
      h = Buffer.alloc(10);
      h[0] = 0x80 | op;
      h[1] = 127;
      h.writeBigUInt64BE(BigInt(payload.length), 2);
    }
    this.send(Buffer.concat([h, payload]), cb);
  }

  /** Send `data` on `channel`. */
  sendOn(channel: number, data: Buffer, cb?: () => void): void {
    this.touch();
    if (this.base64) this.frame(OP.Text, Buffer.from(String.fromCharCode(0x30 + channel) + data.toString("base64")), cb);
    else this.frame(OP.Binary, Buffer.concat([Buffer.from([channel]), data]), cb);
  }

  protected goodbye(): void {
    const body = Buffer.alloc(2);
    body.writeUInt16BE(this.closeCode, 0);
    this.frame(OP.Close, body);
  }

  protected onClosed(): void {
    /* nothing beyond the socket */
  }
}
