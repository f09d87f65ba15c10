/**
 * Wider HTTP/2 flow-control windows for a grpc-js server. grpc-js leaves the server's receive windows at
 * nghttp2's 64 KiB, so a client uploading 1 MiB messages (ctr's content Write) stalls for a window
 * update every 64 KiB. This raises the connection window and the per-stream initial window of every
 * session the server accepts. Memory stays bounded: a connection can have at most `bytes` unread.
 *
 * It reaches grpc-js's http2 servers after bind (a private field, stable across grpc-js 1.x); if that
 * field is missing it does nothing.
 */
import type * as http2 from "node:http2";
import type * as grpc from "@grpc/grpc-js";

export function widenFlowControlWindows(server: grpc.Server, bytes: number): void {
  const orig = server.bindAsync.bind(server);
  server.bindAsync = (port, creds, callback) => {
    orig(port, creds, (err, boundPort) => {
      if (!err) {
        const servers = (server as unknown as { http2Servers?: Map<http2.Http2Server, unknown> }).http2Servers;
        for (const h of servers?.keys() ?? []) {
          h.on("session", (sess: http2.ServerHttp2Session) => {
            try {
              sess.setLocalWindowSize(bytes);
              sess.settings({ initialWindowSize: Math.min(bytes, 2 ** 31 - 1) });
            } catch {
              /* the session may already be closing */
            }
          });
        }
      }
      callback(err, boundPort);
    });
  };
}
