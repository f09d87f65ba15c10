/**
 * The kubelet's port-forward protocol, server side.
 *
 * SPDY (`portforward.k8s.io`): per forwarded connection the client opens a pair of streams, `error`
 * and `data`, with the same `requestID` header and the pod port in `port`. Once both exist the data
 * stream is joined to a connection to that port inside the pod; a failure is written as text on the
 * error stream, then both streams are closed. A pair left incomplete past the stream creation timeout
 * gets an error too.
 *
 * Websocket (query `?port=P&port=Q`): channels 2i (data) and 2i+1 (error) for the i-th port, each
 * opened with the port as two little-endian bytes; one connection per port.
 */
import type { IncomingMessage } from "node:http";
import { Duplex, PassThrough } from "node:stream";
import type { SpdyStream } from "./spdy";
import { acceptSpdy, acceptWebSocket, isWebSocketRequest, writeHttpError } from "./upgrade";
import type { Timeouts } from "./remotecommand";

export const PORTFORWARD_PROTOCOLS = ["portforward.k8s.io"];
export const PORTFORWARD_WS_PROTOCOLS = ["v4.channel.k8s.io", "v4.base64.channel.k8s.io", ""];

/** Join `data` to `port` in the pod; resolves when the connection is over, throws why it failed. */
export type Forwarder = (port: number, data: Duplex) => Promise<void>;

/** The text written on the error stream when forwarding fails, as the kubelet words it. */
export function forwardError(podId: string, port: number, err: unknown): string {
  return `error forwarding port ${port} to pod ${podId}, uid : ${(err as Error).message ?? String(err)}`;
}

function checkHeaders(s: SpdyStream): string | undefined {
  const port = s.header("port");
  if (!port) return `"port" header is required`;
  if (!/^\d+$/.test(port) || Number(port) > 65535) return `unable to parse "${port}" as a port`;
  if (Number(port) < 1) return `port "${port}" must be > 0`;
  const kind = s.header("streamType");
  if (!kind) return `"streamType" header is required`;
  if (kind !== "data" && kind !== "error") return `invalid stream type "${kind}"`;
  return undefined;
}

export function servePortForward(req: IncomingMessage, socket: Duplex, head: Buffer, podId: string, forward: Forwarder, t: Timeouts): void {
  if (isWebSocketRequest(req)) return serveOverWebSocket(req, socket, head, podId, forward, t);
  const up = acceptSpdy(req, socket, head, PORTFORWARD_PROTOCOLS, t.idleMs);
  if (!up) return;
  const pairs = new Map<string, { data?: SpdyStream; error?: SpdyStream; timer: NodeJS.Timeout }>();
  up.session.on("error", () => undefined);
  up.session.on("stream", (s: SpdyStream) => {
    const bad = checkHeaders(s);
    if (bad) {
      s.destroy();
      return;
    }
    const kind = s.header("streamType") as "data" | "error";
    // Clients before requestID pair the error stream with the data stream opened right after it.
    const requestId = s.header("requestID") ?? String(kind === "error" ? s.id + 2 : s.id);
    let p = pairs.get(requestId);
    if (!p) {
      const timer = setTimeout(() => {
        const q = pairs.get(requestId);
        pairs.delete(requestId);
        q?.error?.end(`timed out waiting for streams of request ${requestId}`);
        q?.data?.end();
      }, t.streamCreationMs);
      timer.unref();
      pairs.set(requestId, (p = { timer }));
    }
    if (p[kind]) {
      p.error?.write(`error processing stream for request ${requestId}: ${kind} stream already assigned`);
      s.destroy();
      return;
    }
    p[kind] = s;
    if (!p.data || !p.error) return;
    clearTimeout(p.timer);
    pairs.delete(requestId);
    const { data, error } = p;
    const port = Number(data.header("port"));
    void forward(port, data)
      .catch((e: unknown) => void error.write(forwardError(podId, port, e)))
      .finally(() => {
        data.end();
        error.end();
      });
  });
}

function serveOverWebSocket(req: IncomingMessage, socket: Duplex, head: Buffer, podId: string, forward: Forwarder, t: Timeouts): void {
  const ports = new URL(req.url ?? "/", "http://x").searchParams.getAll("port");
  const bad = !ports.length ? `query parameter "port" is required` : ports.find((p) => !/^\d+$/.test(p) || Number(p) < 1 || Number(p) > 65535);
  if (bad !== undefined) {
    writeHttpError(socket, 400, ports.length ? `unable to parse "${bad}" as a port` : bad);
    return;
  }
  const up = acceptWebSocket(req, socket, head, PORTFORWARD_WS_PROTOCOLS, t.idleMs);
  if (!up) return;
  const { conn } = up;
  const inbound = ports.map(() => new PassThrough());
  conn.on("message", (ch: number, data: Buffer) => {
    if (ch % 2 === 0) inbound[ch / 2]?.write(data);
  });
  let open = ports.length;
  conn.on("close", () => inbound.forEach((s) => s.end()));
  ports.forEach((p, i) => {
    const port = Number(p);
    const portBytes = Buffer.alloc(2);
    portBytes.writeUInt16LE(port, 0);
    conn.sendOn(2 * i, portBytes);
    conn.sendOn(2 * i + 1, portBytes);
    const out = new PassThrough();
    out.on("data", (b: Buffer) => conn.sendOn(2 * i, b));
    const data = Duplex.from({ readable: inbound[i]!, writable: out }).on("error", () => undefined);
    void forward(port, data)
      .catch((e: unknown) => conn.sendOn(2 * i + 1, Buffer.from(forwardError(podId, port, e))))
      .finally(() => {
        if (--open === 0) conn.close();
      });
  });
}
