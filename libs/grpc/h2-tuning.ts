/**
 * HTTP/2 tuning grpc-js does not expose for servers, applied to every session a server accepts.
 *
 * - Wider flow-control windows. grpc-js leaves a server's receive windows at nghttp2's 64 KiB, so a
 *   client uploading 1 MiB messages (ctr's content Write) stalls for a window update every 64 KiB. This
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
import type * as grpc from "@grpc/grpc-js";

export interface Http2Tuning {
  /** Connection and per-stream receive window (default 16 MiB). */
  windowBytes?: number;
  /** Streams a session serves before the server asks the client to reconnect (default 500; 0 = never). */
  maxStreamsPerSession?: number;
}

export function tuneHttp2Server(server: grpc.Server, opts: Http2Tuning = {}): void {
  const windowBytes = Math.min(opts.windowBytes ?? 16 << 20, 2 ** 31 - 1);
  const maxStreams = opts.maxStreamsPerSession ?? 500;
  const orig = server.bindAsync.bind(server);
  server.bindAsync = (port, creds, callback) => {
    orig(port, creds, (err, boundPort) => {
      if (!err) {
        const servers = (server as unknown as { http2Servers?: Map<http2.Http2Server, unknown> }).http2Servers;
        for (const h of servers?.keys() ?? []) h.on("session", (sess: http2.ServerHttp2Session) => tuneSession(sess, windowBytes, maxStreams));
      }
      callback(err, boundPort);
    });
  };
}

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
      sess.close();
    } catch {
      /* already closed */
    }
  });
}
