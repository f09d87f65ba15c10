/**
 * Mutual TLS between Flotilla's processes. A process whose config names a CA (`[flotilla.tls] ca`)
 * and its own certificate (`tls_cert`, `tls_key` under `[flotilla.services.<name>]`) serves its TCP
 * address with TLS, asks every client for a certificate signed by that CA and refuses a handshake
 * without one; it dials its TCP peers with TLS, presenting the same certificate. Unix sockets stay
 * plain (their file mode guards them).
 */
import * as fs from "node:fs";
import * as http2 from "node:http2";
import type * as net from "node:net";
import type * as tls from "node:tls";
import type { Logger } from "pino";
import type { Config, ServiceName } from "../config";
import { errInvalidArgument } from "../errdefs";

/** PEM contents of a CA, a certificate and its key. */
export interface TlsMaterial {
  ca: Buffer;
  cert: Buffer;
  key: Buffer;
}

/** Read the three files; undefined when none is named, InvalidArgument when only some are. */
export function loadTls(what: string, ca: string, cert: string, key: string): TlsMaterial | undefined {
  if (!ca && !cert && !key) return undefined;
  if (!ca || !cert || !key) throw errInvalidArgument(`${what}: TLS needs a CA, a certificate and a key (got ${[ca && "ca", cert && "cert", key && "key"].filter(Boolean).join(", ") || "none"})`);
  const read = (f: string): Buffer => {
    try {
      return fs.readFileSync(f);
    } catch (e) {
      throw errInvalidArgument(`${what}: ${(e as Error).message}`);
    }
  };
  return { ca: read(ca), cert: read(cert), key: read(key) };
}

/**
 * What process `svc` serves and dials with, or, without `svc` (the `flotilla` command, the
 * supervisor), the `[flotilla.tls]` client certificate, else the gateway's. Undefined when TLS is not
 * configured.
 */
export function tlsFor(cfg: Config, svc?: ServiceName): TlsMaterial | undefined {
  const t = cfg.flotilla.tls;
  const own = svc ? cfg.flotilla.services[svc] : t.cert || t.key ? { tls_cert: t.cert, tls_key: t.key } : cfg.flotilla.services.gateway;
  if (!own.tls_cert && !own.tls_key) return undefined;
  return loadTls(svc ? `[flotilla.services.${svc}]` : "[flotilla.tls]", t.ca, own.tls_cert, own.tls_key);
}

/** The `http2.connect` authority and options for a TCP target `host:port`: TLS presenting `clientTls` when given, else plain. */
export function tcpConnectOptions(target: string, clientTls?: TlsMaterial): { authority: string; options: http2.SecureClientSessionOptions } {
  if (!clientTls) return { authority: `http://${target}`, options: {} };
  return { authority: `https://${target}`, options: { ca: clientTls.ca, cert: clientTls.cert, key: clientTls.key, ALPNProtocols: ["h2"] } };
}

/** Why a client's handshake was refused, in words an operator reads in the log. */
export function refusalReason(err: Error & { code?: string }, authorizationError?: string): string {
  const text = `${authorizationError ?? ""} ${err.code ?? ""} ${err.message}`;
  if (/PEER_DID_NOT_RETURN_A_CERTIFICATE|NO_CERTIFICATE/i.test(text)) return "no client certificate";
  if (/EXPIRED/i.test(text)) return "client certificate expired";
  if (/NOT_YET_VALID/i.test(text)) return "client certificate not yet valid";
  if (/UNKNOWN_CA|ISSUER|SELF_SIGNED|UNABLE_TO_VERIFY|CERTIFICATE_VERIFY_FAILED/i.test(text)) return "client certificate not signed by the configured CA";
  return authorizationError ?? err.message;
}

/**
 * An HTTP/2 server with mutual TLS: only clients with a certificate signed by the CA complete the
 * handshake; each refusal is one warn line naming the peer and the reason.
 */
export function createMutualTlsServer(t: TlsMaterial, options: http2.ServerOptions, log: Logger): http2.Http2SecureServer {
  const server = http2.createSecureServer({ ...options, ca: t.ca, cert: t.cert, key: t.key, requestCert: true, rejectUnauthorized: true, ALPNProtocols: ["h2"] });
  // A certificate that fails verification is not a handshake error to Node: it destroys the socket
  // once the handshake is done, keeping the cause in `authorizationError`, and reports a hang-up. By
  // then the socket has forgotten its peer, so the address is noted when the connection arrives.
  const peers = new WeakMap<net.Socket, string>();
  server.on("connection", (raw: net.Socket) => peers.set(raw, `${raw.remoteAddress}:${raw.remotePort}`));
  server.on("tlsClientError", (err: Error & { code?: string }, sock: tls.TLSSocket & { _parent?: net.Socket }) => {
    const peer = sock.remoteAddress ? `${sock.remoteAddress}:${sock.remotePort}` : (sock._parent && peers.get(sock._parent)) ?? "unknown";
    const authz = sock.authorizationError ? String(sock.authorizationError) : undefined;
    log.warn({ peer, reason: refusalReason(err, authz), code: authz ?? err.code }, "TLS handshake refused");
  });
  return server;
}
