/**
 * HTTP/2 tuning applied to every session Flotilla's servers (libs/grpc/server.ts, the gateway) accept.
 *
 * - Wider flow-control windows. nghttp2 starts a session's receive windows at 64 KiB, so a client
 *   uploading 1 MiB messages (ctr's content Write) would stall for a window update every 64 KiB. This
 *   raises the connection window and the per-stream initial window. Memory stays bounded: a connection
 *   can have at most `windowBytes` unread.
 * - Session rotation. nghttp2 ends a session with GOAWAY(INTERNAL_ERROR) once its peer has reset
 *   about 1,000 streams faster than 33 a second (the rapid-reset mitigation; Node 20 cannot raise the
 *   limit). ctr cancels each Read window it has filled, and through a proxy (the gateway forwards each
 *   cancel) a `ctr content get` of a large blob resets streams legitimately at that rate. After
 *   `maxStreamsPerSession` streams the server sends a graceful GOAWAY, as grpc-js does for
 *   `grpc.max_connection_age_ms`: calls in flight finish, new calls go to a new connection, and no
 *   session lives long enough to exhaust the reset budget.
 *
 * It reaches grpc-js's http2 servers after bind (a private field, stable across grpc-js 1.x); if the
 * field is missing it does nothing.
 */
import * as http2 from "node:http2";
import type { Logger } from "pino";
import { createMutualTlsServer, type TlsMaterial } from "./tls";
import { MAX_FRAME_SIZE, SESSION_MEMORY_MB, type H2Server } from "./wire";

const ROTATE_CLOSE_DELAY_MS = 2000;

/** Apply the window and rotation tuning to one accepted session. */
export function tuneSession(sess: http2.ServerHttp2Session, windowBytes: number, maxStreams: number): void {
  try {
    sess.setLocalWindowSize(windowBytes);
    sess.settings({ initialWindowSize: windowBytes });
  } catch {
    return; // the session is already closing
  }
  if (maxStreams <= 0) return;
  let streams = 0;
  sess.on("stream", () => {
    if (++streams !== maxStreams) return;
    try {
      // Last-stream-id 2^31-1: every stream the client may already have opened is still served.
      sess.goaway(http2.constants.NGHTTP2_NO_ERROR, 2 ** 31 - 1, Buffer.from("rotate"));
    } catch {
      return; // already closed
    }
    // Streams the client opens before it has read the GOAWAY are still accepted: closing at once would
    // refuse them (REFUSED_STREAM). The session closes once the client has certainly moved on.
    const t = setTimeout(() => {
      try {
        sess.close();
      } catch {
        /* already closed */
      }
    }, ROTATE_CLOSE_DELAY_MS);
    t.unref();
    sess.once("close", () => clearTimeout(t));
  });
}

/**
 * An HTTP/2 server for gRPC with the tuning above on every session it accepts; the sessions are kept in
 * `sessions` while open (for a graceful close). With `secure`, it serves mutual TLS (see tls.ts).
 */
export function createTunedServer(windowBytes: number, maxStreamsPerSession: number, sessions: Set<http2.Http2Session>, secure?: { tls: TlsMaterial; log: Logger }): H2Server {
  // No per-session memory cap: past it nghttp2 refuses every new stream; the windows bound memory.
  const options: http2.ServerOptions = { settings: { initialWindowSize: windowBytes, maxFrameSize: MAX_FRAME_SIZE }, maxSessionMemory: SESSION_MEMORY_MB };
  const server: H2Server = secure ? createMutualTlsServer(secure.tls, options, secure.log) : http2.createServer(options);
  server.on("session", (sess: http2.ServerHttp2Session) => {
    sessions.add(sess);
    sess.on("close", () => sessions.delete(sess));
    sess.on("error", () => undefined);
    tuneSession(sess, windowBytes, maxStreamsPerSession);
  });
  return server;
}
