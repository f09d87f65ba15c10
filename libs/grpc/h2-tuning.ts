/**
 * HTTP/2 tuning grpc-js does not expose for servers, applied to every session the server accepts:
 *
 * - Wider flow-control windows. grpc-js leaves the server's receive windows at nghttp2's 64 KiB, so a
 *   client uploading 1 MiB messages (ctr's content Write) stalls for a window update every 64 KiB. This
 *   raises the connection window and the per-stream initial window. Memory stays bounded: a connection
 *   can have at most `bytes` unread.
 * - A higher RST_STREAM rate limit. Node closes a session (GOAWAY, INTERNAL_ERROR) whose peer resets
 *   more than 33 streams a second (rapid-reset mitigation). ctr cancels every Read call once it has its
 *   window, so through a proxy (the gateway forwards each cancel) a `ctr content get` of a large blob
 *   resets hundreds of streams a second, legitimately.
 *
 * It reaches grpc-js's http2 servers after bind (a private field, stable across grpc-js 1.x) and Node's
 * per-server options (read when each session starts); if either is missing it does nothing.
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
          const optsSym = Object.getOwnPropertySymbols(h).find((sym) => sym.description === "options");
          const opts = optsSym ? (h as unknown as Record<symbol, Record<string, unknown> | undefined>)[optsSym] : undefined;
          if (opts) {
            opts.streamResetBurst = 100_000;
            opts.streamResetRate = 100_000;
            opts.settings = { ...(opts.settings as object | undefined), initialWindowSize: Math.min(bytes, 2 ** 31 - 1) };
          }
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
