/**
 * What SPDY sessions and websockets share: an upgraded socket read as frames, an idle timeout (no
 * frame either way for that long closes the connection), and a close that says goodbye once, ends
 * the socket, and destroys it if the peer does not let go within a second.
 */
import { EventEmitter } from "node:events";
import type { Duplex } from "node:stream";

export abstract class UpgradedConn extends EventEmitter {
  protected closed = false;
  private idleTimer?: NodeJS.Timeout;

  constructor(protected readonly socket: Duplex, head: Buffer, private readonly idleTimeoutMs: number) {
    super();
    socket.on("data", (b: Buffer) => {
      if (this.closed) return;
      this.touch();
      this.onBytes(b);
    });
    for (const ev of ["error", "close", "end"]) socket.on(ev, () => this.close());
    this.touch();
    if (head.length) setImmediate(() => this.onBytes(head));
  }

  /** Bytes from the peer. */
  protected abstract onBytes(b: Buffer): void;
  /** The last frame sent before the socket ends (GOAWAY, websocket close). */
  protected abstract goodbye(): void;
  /** Called once the connection is closed. */
  protected abstract onClosed(): void;

  get isClosed(): boolean {
    return this.closed;
  }

  /** Restart the idle timeout. */
  protected touch(): void {
    if (!this.idleTimeoutMs) return;
    clearTimeout(this.idleTimer);
    this.idleTimer = setTimeout(() => this.close(), this.idleTimeoutMs);
    this.idleTimer.unref();
  }

  /** Write to the socket unless closed; `cb` runs either way. */
  protected send(b: Buffer, cb?: () => void): void {
    if (this.closed || this.socket.destroyed) {
      cb?.();
      return;
    }
    this.socket.write(b, cb ? () => cb() : undefined);
  }

  close(): void {
    if (this.closed) return;
    this.goodbye();
    this.closed = true;
    clearTimeout(this.idleTimer);
    this.onClosed();
    this.socket.end();
    setTimeout(() => this.socket.destroy(), 1000).unref();
    this.emit("close");
  }
}
