/**
 * The gateway's public face: a plain HTTP/2 server that proxies every gRPC call, stream for stream, to
 * the process that owns its service, without decoding or re-framing a single message. gRPC is HTTP/2
 * with length-prefixed messages and the status in trailers, so a call is forwarded by copying its
 * headers (plus the gateway's trace context), piping DATA both ways with HTTP/2 flow control, and
 * copying the trailers back. Resets travel both ways (a client cancel reaches the owner).
 *
 * Services the gateway implements itself (Version, Introspection, Events, Health) are served by its
 * own gRPC server (libs/grpc/server) on an internal socket and reached the same way, as is any path no
 * process owns (which that server answers with Unimplemented, as containerd does).
 *
 * Two kinds of calls may be answered here instead, from what the owners keep on this host: lookups a
 * read-only view of the owner's database can answer (views.ts), and content Reads from the blob files
 * (content-reads.ts). Whatever those cannot answer is forwarded as above.
 *
 * A server span is recorded here for every forwarded call (the parent of the owner's span); per-call
 * metrics only for the calls answered here (views, content reads): a forwarded call is counted by its
 * owner, so sums across processes count each call once.
 */
import { Status } from "#libs/grpc/status";
import * as fs from "node:fs";
import * as http2 from "node:http2";
import { context as otelContext, propagation, trace } from "@opentelemetry/api";
import type { Logger } from "pino";
import type { Metrics } from "#libs/metrics";
import { methodKind, type MethodKind } from "#libs/grpc/server";
import { createTunedServer } from "#libs/grpc/h2-tuning";
import { CONTENT_READ_PATH, type DirectContentReads } from "./content-reads";
import { GRPC_CONTENT_TYPE, closeHttp2, connectHttp2, listenHttp2, respondStatusOnly, type H2Server } from "#libs/grpc/wire";
import type { TlsMaterial } from "#libs/grpc/tls";
import type { ReadViews } from "./views";
import { lookupService } from "#libs/proto";
import { SpanKind, SpanStatusCode, tracer, tracingExported } from "#libs/tracing";

const {
  HTTP2_HEADER_PATH,
  HTTP2_HEADER_STATUS,
  HTTP2_HEADER_METHOD,
  HTTP2_HEADER_SCHEME,
  HTTP2_HEADER_AUTHORITY,
  NGHTTP2_CANCEL,
  NGHTTP2_REFUSED_STREAM,
  NGHTTP2_NO_ERROR,
} = http2.constants;

/** Receive windows (connection and stream) on both sides of the proxy. */
const WINDOW = 16 << 20;
/** A single-message request (unary, server-streaming) larger than this is streamed up as it comes. */
const BUFFER_LIMIT = 65536;
const REQUEST_OPTIONS = { endStream: false };
const END_STREAM = { endStream: true };
const WAIT_FOR_TRAILERS = { waitForTrailers: true };
const RESPONSE_HEADERS = { [HTTP2_HEADER_STATUS]: 200, "content-type": GRPC_CONTENT_TYPE };
const OK_TRAILERS = { "grpc-status": "0" };
const ignore = (): void => undefined;

/**
 * Read a request body whole, or its first `limit` bytes: `done(body, complete)` is called once, with
 * `complete` false when the body outgrew the limit (the stream is then paused with the rest unread)
 * or the client went away before it ended.
 */
function readBody(down: http2.ServerHttp2Stream, limit: number, done: (body: Buffer, complete: boolean) => void): void {
  let first: Buffer | undefined;
  let chunks: Buffer[] | undefined;
  let len = 0;
  let settled = false;
  const body = (): Buffer => (chunks ? Buffer.concat(chunks, len) : (first ?? EMPTY));
  const settle = (complete: boolean): void => {
    if (settled) return;
    settled = true;
    down.off("data", onData);
    down.off("end", onEnd);
    down.off("close", onClose);
    done(body(), complete);
  };
  const onData = (c: Buffer): void => {
    if (first === undefined) first = c;
    else (chunks ??= [first]).push(c);
    len += c.length;
    if (len > limit) {
      down.pause();
      settle(false);
    }
  };
  const onEnd = (): void => settle(true);
  const onClose = (): void => settle(false);
  down.on("data", onData);
  down.on("end", onEnd);
  down.on("close", onClose);
}
const EMPTY = Buffer.alloc(0);

/** Headers that describe one hop and are never forwarded. */
const DROP_REQUEST = new Set(["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "host"]);

interface Route {
  address: string;
  /** Known method kinds of the owned services (for metrics labels). */
  kinds: Map<string, MethodKind>;
  /** Record a span here (false for the gateway's own services: its own gRPC server does). */
  observe: boolean;
}

export interface FrontOptions {
  /** Service full name -> owner address. */
  routes: Record<string, string>;
  /** The gateway's own gRPC server (its services and the Unimplemented answer). */
  local: string;
  log: Logger;
  metrics?: Metrics;
  /** Streams a client session may open before it is asked to reconnect (see libs/grpc/h2-tuning). */
  maxStreamsPerSession?: number;
  /** Serve content Read from the blob files the content process's database says a namespace holds (see content-reads). */
  contentReads?: DirectContentReads;
  /** Answer lookups from read-only views of the owners' databases (see views). */
  views?: ReadViews;
  /** containerd's `[grpc] tcp_address`: also serve on TCP, with mutual TLS when `tls` is given. */
  tcp?: { address: string; tls?: TlsMaterial };
  /** The gateway's client certificate: owners on TCP are dialled with mutual TLS (the process's ChannelPool's). */
  upstreamTls?: TlsMaterial;
}

/** One HTTP/2 client session per backend address, replaced when it closes or is told to go away. */
class Upstreams {
  private readonly sessions = new Map<string, http2.ClientHttp2Session>();

  constructor(private readonly tls?: TlsMaterial) {}

  get(address: string): http2.ClientHttp2Session {
    const cur = this.sessions.get(address);
    if (cur && !cur.closed && !cur.destroyed) return cur;
    const s = connectHttp2(address, WINDOW, this.tls);
    const drop = (): void => {
      if (this.sessions.get(address) === s) this.sessions.delete(address);
    };
    s.on("connect", () => {
      try {
        s.setLocalWindowSize(WINDOW);
      } catch {
        /* closing */
      }
    });
    s.on("goaway", drop);
    s.on("close", drop);
    s.on("error", drop); // each stream sees the failure itself
    s.unref();
    this.sessions.set(address, s);
    return s;
  }

  closeAll(): void {
    for (const s of this.sessions.values()) s.destroy();
    this.sessions.clear();
  }
}

/** The gRPC status a reset stream means to a gRPC client. */
function statusOfReset(code: number): Status {
  if (code === NGHTTP2_CANCEL) return Status.CANCELLED;
  if (code === NGHTTP2_REFUSED_STREAM) return Status.UNAVAILABLE;
  return Status.INTERNAL;
}

export class GatewayFront {
  private readonly server: H2Server;
  private readonly tcpServer?: H2Server;
  private readonly upstreams: Upstreams;
  private readonly routes = new Map<string, Route>();
  private readonly localRoute: Route;
  private readonly sessions = new Set<http2.Http2Session>();
  private boundPath?: string;

  constructor(private readonly opts: FrontOptions) {
    this.upstreams = new Upstreams(opts.upstreamTls);
    for (const [svc, address] of Object.entries(opts.routes)) {
      const kinds = new Map<string, MethodKind>();
      for (const m of lookupService(svc).methodsArray) kinds.set(m.name, methodKind(m.requestStream, m.responseStream));
      this.routes.set(svc, { address, kinds, observe: true });
    }
    this.localRoute = { address: opts.local, kinds: new Map(), observe: false };
    this.server = createTunedServer(WINDOW, opts.maxStreamsPerSession ?? 500, this.sessions);
    this.server.on("stream", this.onStream);
    if (opts.tcp) {
      this.tcpServer = createTunedServer(WINDOW, opts.maxStreamsPerSession ?? 500, this.sessions, opts.tcp.tls && { tls: opts.tcp.tls, log: opts.log });
      this.tcpServer.on("stream", this.onStream);
    }
  }

  private readonly onStream = (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): void => {
    const p = headers[HTTP2_HEADER_PATH];
    const { contentReads, views } = this.opts;
    if (contentReads && p === CONTENT_READ_PATH) this.contentRead(contentReads, stream, headers);
    else if (views && typeof p === "string" && views.has(p)) this.viewCall(views, p, stream, headers);
    else this.proxy(stream, headers);
  };

  /** Content Read: from the blob file when the namespace holds the blob, else forwarded. */
  private contentRead(reads: DirectContentReads, down: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): void {
    down.on("error", () => undefined);
    const chunks: Buffer[] = [];
    let len = 0;
    const onData = (c: Buffer): void => {
      chunks.push(c);
      len += c.length;
      if (len > 65536) {
        // Not a plain Read request: stop buffering and let the owner judge it.
        down.off("data", onData);
        down.off("end", onEnd);
        down.pause();
        this.proxy(down, headers, Buffer.concat(chunks));
      }
    };
    const onEnd = (): void => {
      const body = Buffer.concat(chunks);
      const nsh = headers["containerd-namespace"];
      const ns = Array.isArray(nsh) ? nsh[0] : nsh;
      const req = ns ? reads.parse(body) : undefined;
      const forward = (): void => this.proxy(down, headers, body, true);
      if (!ns || !req || !reads.allowed(ns, req.digest)) return forward();
      const obs = this.observe(this.routes.get("containerd.services.content.v1.Content")!, CONTENT_READ_PATH, headers, true);
      reads.serve(down, req).then(
        (st) => (st ? obs.finish(st.code, st.message, st.messages) : forward()),
        (e: Error) => {
          obs.finish(Status.INTERNAL, e.message);
          if (!down.headersSent) respondStatusOnly(down, Status.INTERNAL, e.message);
          else down.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
        },
      );
    };
    down.on("data", onData);
    down.on("end", onEnd);
  }

  /** A lookup: answered from a view when it finds the record, else forwarded to the owner. */
  private viewCall(views: ReadViews, methodPath: string, down: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): void {
    down.on("error", ignore);
    readBody(down, BUFFER_LIMIT, (body, complete) => {
      const nsh = headers["containerd-namespace"];
      const frame = complete && !down.destroyed && !down.closed ? views.answer(methodPath, Array.isArray(nsh) ? nsh[0] : nsh, body) : undefined;
      if (!frame) return this.forward(down, headers, body, complete);
      const obs = this.observe(this.routes.get(methodPath.slice(1, methodPath.indexOf("/", 1)))!, methodPath, headers, true);
      down.respond(RESPONSE_HEADERS, WAIT_FOR_TRAILERS);
      down.once("wantTrailers", () => {
        try {
          down.sendTrailers(OK_TRAILERS);
        } catch {
          /* the client is gone */
        }
      });
      down.end(frame);
      obs.finish(Status.OK, undefined, 1);
    });
  }

  /**
   * A server span (when exported) for one call the gateway answers or forwards, and metrics when it
   * answers the call itself (`answered`, or `finish` told that the call never reached its owner): a call
   * an owner answered is counted by that owner alone.
   */
  private observe(route: Route, methodPath: string, headers: http2.IncomingHttpHeaders, answered: boolean): { finish(code: number, message?: string, sent?: number, unreached?: boolean): void; inject(out: http2.OutgoingHttpHeaders): void } {
    const [, service = "", method = ""] = methodPath.split("/");
    const started = process.hrtime.bigint();
    const kind = route.kinds.get(method) ?? "unary";
    // A call answered here has one request message; `finish` says how many went out.
    const tally = answered ? this.opts.metrics?.rpcStarted(service, method, kind) : undefined;
    tally?.received();
    const getter = { keys: (c: http2.IncomingHttpHeaders) => Object.keys(c), get: (c: http2.IncomingHttpHeaders, k: string) => (typeof c[k] === "string" ? (c[k] as string) : undefined) };
    // Without an exporter no span is made: the client's trace context is passed on as it came.
    const parent = route.observe && tracingExported() ? propagation.extract(otelContext.active(), headers, getter) : undefined;
    const span = parent
      ? tracer().startSpan(methodPath.slice(1), { kind: SpanKind.SERVER, attributes: { "rpc.system": "grpc", "rpc.service": service, "rpc.method": method, "flotilla.service": "gateway" } }, parent)
      : undefined;
    let finished = false;
    return {
      finish: (code, message, sent = 0, unreached = false) => {
        if (finished || !route.observe) return;
        if (unreached && !tally) this.opts.metrics?.rpcStarted(service, method, kind).done(code, Number(process.hrtime.bigint() - started) / 1e9);
        finished = true;
        if (span) {
          span.setAttribute("rpc.grpc.status_code", code);
          if (code !== Status.OK) span.setStatus({ code: SpanStatusCode.ERROR, message });
          span.end();
        }
        tally?.sent(sent);
        tally?.done(code, Number(process.hrtime.bigint() - started) / 1e9);
      },
      inject: (out) => {
        if (!span || !parent) return;
        delete out.traceparent;
        delete out.tracestate;
        propagation.inject(trace.setSpan(parent, span), out, { set: (c, k, v) => (c[k] = v) });
      },
    };
  }

  /**
   * Forward one call to its owner. `body` is the request already read (then `bodyComplete` says whether
   * the client has finished sending).
   *
   * A call whose request is a single message (unary, server-streaming) is read whole first (up to
   * BUFFER_LIMIT) and sent upstream with its end in one go: headers and DATA(END_STREAM) leave in one
   * write, instead of a DATA frame and an empty END_STREAM frame written separately by a pipe.
   */
  private proxy(down: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, body?: Buffer, bodyComplete = false): void {
    down.on("error", ignore);
    if (body === undefined) {
      const p = headers[HTTP2_HEADER_PATH];
      const methodPath = typeof p === "string" ? p : "";
      const i = methodPath.indexOf("/", 1);
      const kind = i > 0 ? this.routes.get(methodPath.slice(1, i))?.kinds.get(methodPath.slice(i + 1)) : undefined;
      if (kind === "unary" || kind === "server_stream") {
        readBody(down, BUFFER_LIMIT, (b, complete) => this.forward(down, headers, b, complete));
        return;
      }
    }
    this.forward(down, headers, body, bodyComplete);
  }

  private forward(down: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, body: Buffer | undefined, bodyComplete: boolean, retried = false): void {
    const methodPath = String(headers[HTTP2_HEADER_PATH] ?? "");
    const i = methodPath.indexOf("/", 1);
    const service = i > 0 ? methodPath.slice(1, i) : "";
    const route = this.routes.get(service) ?? this.localRoute;
    if (down.destroyed || down.closed) {
      // The client went away while its request was being read.
      if (route.observe) this.observe(route, methodPath, headers, false).finish(Status.CANCELLED, "call canceled by client");
      return;
    }
    const obs = route.observe ? this.observe(route, methodPath, headers, false) : undefined;
    let finished = false;
    const finish = (code: number, message?: string, unreached = false): void => {
      if (finished) return;
      finished = true;
      obs?.finish(code, message, 0, unreached);
    };

    const out: http2.OutgoingHttpHeaders = {
      [HTTP2_HEADER_METHOD]: "POST",
      [HTTP2_HEADER_PATH]: methodPath,
      [HTTP2_HEADER_SCHEME]: "http",
      [HTTP2_HEADER_AUTHORITY]: headers[HTTP2_HEADER_AUTHORITY] ?? "localhost",
    };
    for (const k in headers) {
      const v = headers[k];
      if (k.charCodeAt(0) === 58 /* : */ || v === undefined || DROP_REQUEST.has(k)) continue;
      out[k] = v;
    }
    obs?.inject(out);

    /**
     * Answer with a status alone (the call never reached an owner, or died before it answered). A call
     * no owner took (`unreached`) is counted here, as the gateway answered it.
     */
    const statusOnly = (code: Status, message: string, unreached = false): void => {
      finish(code, message, unreached);
      if (down.destroyed || down.closed) return;
      if (down.headersSent) {
        down.close(code === Status.CANCELLED ? NGHTTP2_CANCEL : http2.constants.NGHTTP2_INTERNAL_ERROR);
        return;
      }
      respondStatusOnly(down, code, message);
    };

    let up: http2.ClientHttp2Stream;
    try {
      up = this.upstreams.get(route.address).request(out, REQUEST_OPTIONS);
    } catch (e) {
      statusOnly(Status.UNAVAILABLE, `connection error: ${(e as Error).message}`, true);
      return;
    }
    let trailers: http2.IncomingHttpHeaders | undefined;
    let ended = false;
    let responded = false;
    /**
     * A refused stream was never processed by the owner (REFUSED_STREAM: e.g. its session was closing):
     * a request the gateway holds whole is sent again, once, on a fresh session.
     */
    const retryRefused = (): boolean => {
      if (retried || responded || up.rstCode !== NGHTTP2_REFUSED_STREAM || body === undefined || !bodyComplete) return false;
      ended = true;
      down.off("wantTrailers", onWantTrailers);
      down.off("close", onDownClose);
      this.forward(down, headers, body, true, true);
      return true;
    };

    up.on("response", (h, flags) => {
      responded = true;
      if (down.destroyed || down.closed) return;
      const resp: http2.OutgoingHttpHeaders = {};
      for (const k in h) {
        const v = h[k];
        if (k.charCodeAt(0) !== 58 && v !== undefined) resp[k] = v;
      }
      resp[HTTP2_HEADER_STATUS] = h[HTTP2_HEADER_STATUS] ?? 200;
      // Trailers-only: the whole answer is in these headers.
      if ((flags & http2.constants.NGHTTP2_FLAG_END_STREAM) !== 0 || h["grpc-status"] !== undefined) {
        ended = true;
        down.respond(resp, END_STREAM);
        finish(Number(h["grpc-status"] ?? Status.UNKNOWN), String(h["grpc-message"] ?? ""));
        return;
      }
      down.respond(resp, WAIT_FOR_TRAILERS);
      // Responses flow down with backpressure (no pipe: two listeners instead of pipe's eight).
      const resume = (): void => {
        up.resume();
      };
      up.on("data", (c: Buffer) => {
        if (down.destroyed) return;
        if (!down.write(c)) {
          up.pause();
          down.once("drain", resume);
        }
      });
      up.on("end", () => {
        if (!down.destroyed) down.end();
      });
    });
    up.on("trailers", (t) => {
      trailers = t;
    });
    const onWantTrailers = (): void => {
      ended = true;
      const t: http2.OutgoingHttpHeaders = {};
      if (trailers) {
        for (const k in trailers) {
          const v = trailers[k];
          if (k.charCodeAt(0) !== 58 && v !== undefined) t[k] = v;
        }
      }
      if (t["grpc-status"] === undefined) {
        t["grpc-status"] = String(Status.INTERNAL);
        t["grpc-message"] = "upstream ended without a status";
      }
      try {
        down.sendTrailers(t);
      } catch {
        /* the client is gone */
      }
      finish(Number(t["grpc-status"]), String(t["grpc-message"] ?? ""));
    };
    down.on("wantTrailers", onWantTrailers);
    up.on("error", (e: Error) => {
      if (ended || retryRefused()) return;
      ended = true;
      statusOnly(Status.UNAVAILABLE, `connection error: ${e.message}`, !responded);
    });
    up.on("close", () => {
      if (ended || retryRefused()) return;
      if (up.rstCode !== undefined && up.rstCode !== NGHTTP2_NO_ERROR) {
        ended = true;
        statusOnly(statusOfReset(up.rstCode), `stream reset by ${service || "server"} (code ${up.rstCode})`);
      }
    });

    // Requests flow up with backpressure; a client's cancel resets the upstream stream.
    if (body) {
      if (bodyComplete) up.end(body);
      else {
        up.write(body);
        down.pipe(up);
        down.resume();
      }
    } else {
      down.pipe(up);
    }
    const onDownClose = (): void => {
      // Only a call that did not complete is cancelled upstream (a needless reset counts against the
      // owner's rapid-reset budget).
      if (!ended && !up.closed && !up.destroyed) up.close(NGHTTP2_CANCEL);
      finish(Status.CANCELLED, "call canceled by client");
    };
    down.on("close", onDownClose);
  }

  async listen(address: string): Promise<void> {
    this.boundPath = (await listenHttp2(this.server, address)).socketPath;
    if (this.tcpServer) {
      const { port } = await listenHttp2(this.tcpServer, this.opts.tcp!.address);
      this.opts.log.info({ address: this.opts.tcp!.address, port, tls: !!this.opts.tcp!.tls }, "serving the containerd API on TCP too");
    }
  }

  /** Stop accepting, ask every client to go away, let calls finish for up to `graceMs`, then cut. */
  async close(graceMs = 5000): Promise<void> {
    await Promise.all([this.server, this.tcpServer].map((srv) => srv && closeHttp2(srv, this.sessions, graceMs)));
    this.upstreams.closeAll();
    if (this.boundPath) fs.rmSync(this.boundPath, { force: true });
  }
}
