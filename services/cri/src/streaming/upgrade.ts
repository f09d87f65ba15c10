/**
 * The HTTP side of the streaming server's upgrades, as kubelet clients expect it: the stream protocol
 * handshake (`X-Stream-Protocol-Version`, the first client protocol the server knows wins), the
 * SPDY/3.1 upgrade (101 with `Upgrade: SPDY/3.1`) and the websocket one (RFC 6455, the subprotocol
 * picked from `Sec-WebSocket-Protocol`), and plain error answers written on the raw socket.
 */
import { createHash } from "node:crypto";
import type { IncomingMessage } from "node:http";
import { STATUS_CODES } from "node:http";
import type { Duplex } from "node:stream";
import { SpdySession } from "./spdy";
import { WebSocketConn } from "./websocket";

export const PROTOCOL_HEADER = "X-Stream-Protocol-Version";
export const ACCEPTED_PROTOCOLS_HEADER = "X-Accepted-Stream-Protocol-Versions";

/** Answer on a raw (not yet upgraded) socket and close it. */
export function writeHttpError(socket: Duplex, status: number, message: string, headers: [string, string][] = []): void {
  const body = Buffer.from(message + "\n");
  const lines = [
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ""}`,
    "Content-Type: text/plain; charset=utf-8",
    "X-Content-Type-Options: nosniff",
    `Content-Length: ${body.length}`,
    "Connection: close",
    ...headers.map(([k, v]) => `${k}: ${v}`),
  ];
  socket.end(Buffer.concat([Buffer.from(lines.join("\r\n") + "\r\n\r\n"), body]));
}

/** Header values, split on commas, as Go's textproto would list them. */
function headerValues(req: IncomingMessage, name: string): string[] {
  const v = req.headers[name.toLowerCase()];
  const all = Array.isArray(v) ? v : v === undefined ? [] : [v];
  return all.flatMap((s) => s.split(",")).map((s) => s.trim()).filter(Boolean);
}

export function isWebSocketRequest(req: IncomingMessage): boolean {
  return headerValues(req, "connection").some((c) => c.toLowerCase() === "upgrade") && (req.headers.upgrade ?? "").toLowerCase() === "websocket";
}

/**
 * Upgrade to SPDY/3.1 after negotiating one of `protocols`; answers the error itself and returns
 * undefined when either step fails.
 */
export function acceptSpdy(req: IncomingMessage, socket: Duplex, head: Buffer, protocols: string[], idleTimeoutMs: number): { session: SpdySession; protocol: string } | undefined {
  const offered = headerValues(req, PROTOCOL_HEADER);
  if (!offered.length) {
    writeHttpError(socket, 400, `unable to upgrade: ${PROTOCOL_HEADER} is required`);
    return undefined;
  }
  const protocol = offered.find((p) => protocols.includes(p));
  if (!protocol) {
    writeHttpError(socket, 403, `unable to upgrade: unable to negotiate protocol: client supports [${offered.join(" ")}], server accepts [${protocols.join(" ")}]`,
      protocols.map((p) => [ACCEPTED_PROTOCOLS_HEADER, p]));
    return undefined;
  }
  const connection = String(req.headers.connection ?? "").toLowerCase();
  const upgrade = String(req.headers.upgrade ?? "").toLowerCase();
  if (!connection.includes("upgrade") || !upgrade.includes("spdy/3.1")) {
    writeHttpError(socket, 400, "unable to upgrade: missing upgrade headers in request");
    return undefined;
  }
  socket.write(["HTTP/1.1 101 Switching Protocols", "Connection: Upgrade", "Upgrade: SPDY/3.1", `${PROTOCOL_HEADER}: ${protocol}`, `Date: ${new Date().toUTCString()}`].join("\r\n") + "\r\n\r\n");
  return { session: new SpdySession(socket, head, idleTimeoutMs), protocol };
}

/** Upgrade to a websocket speaking one of `protocols` ("" = the client named none). */
export function acceptWebSocket(req: IncomingMessage, socket: Duplex, head: Buffer, protocols: string[], idleTimeoutMs: number): { conn: WebSocketConn; protocol: string } | undefined {
  const key = req.headers["sec-websocket-key"];
  if (typeof key !== "string" || !key || req.headers["sec-websocket-version"] !== "13") {
    writeHttpError(socket, 400, "unable to upgrade: a websocket version 13 handshake is required", [["Sec-WebSocket-Version", "13"]]);
    return undefined;
  }
  const offered = headerValues(req, "sec-websocket-protocol");
  const protocol = (offered.length ? offered : [""]).find((p) => protocols.includes(p));
  if (protocol === undefined) {
    writeHttpError(socket, 403, `requested protocol(s) are not supported: [${offered.join(" ")}]; supports [${protocols.filter(Boolean).join(" ")}]`);
    return undefined;
  }
  const accept = createHash("sha1").update(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest("base64");
  socket.write(["HTTP/1.1 101 Switching Protocols", "Upgrade: websocket", "Connection: Upgrade", `Sec-WebSocket-Accept: ${accept}`,
    ...(protocol ? [`Sec-WebSocket-Protocol: ${protocol}`] : [])].join("\r\n") + "\r\n\r\n");
  return { conn: new WebSocketConn(socket, head, protocol.includes("base64"), idleTimeoutMs), protocol };
}
