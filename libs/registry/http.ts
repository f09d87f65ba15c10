/**
 * The HTTP layer of the registry client: node:http/https with keep-alive, redirects (Authorization is
 * dropped when a redirect leaves the host), an inactivity timeout, and retries with exponential backoff
 * and jitter for network errors and 408/429/5xx answers.
 */
import * as http from "node:http";
import * as https from "node:https";
import type { Readable } from "node:stream";

export interface HttpRequest {
  method: string;
  url: string;
  headers?: Record<string, string>;
  /** A buffer, or a factory for a stream body (called again on each retry). */
  body?: Buffer | (() => Readable | Promise<Readable>);
  contentLength?: number;
  signal?: AbortSignal;
  skipVerify?: boolean;
  ca?: Buffer[];
  /** Follow 301/302/303/307/308 (default true). */
  followRedirects?: boolean;
  /** The connections to use. */
  agents: HttpAgents;
}

export interface HttpResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  /** The URL that answered (after redirects). */
  url: string;
  body: http.IncomingMessage;
}

export interface RetryPolicy {
  /** Total tries, including the first. */
  attempts: number;
  baseMs: number;
  maxMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { attempts: 5, baseMs: 200, maxMs: 5000 };
export const IDLE_TIMEOUT_MS = 60_000;
const MAX_REDIRECTS = 10;

/**
 * Keep-alive connections to registries: one agent per kind (plain, TLS, TLS unverified, TLS with a
 * given CA set). The transfer process keeps one for all its transfers; a client given none makes its own.
 */
export class HttpAgents {
  private readonly http = new http.Agent({ keepAlive: true, maxSockets: 32, maxFreeSockets: 16 });
  private readonly https = new https.Agent({ keepAlive: true, maxSockets: 32, maxFreeSockets: 16 });
  private readonly insecure = new https.Agent({ keepAlive: true, maxSockets: 32, maxFreeSockets: 16, rejectUnauthorized: false });
  private readonly byCa = new Map<string, https.Agent>();

  for(url: URL, req: Pick<HttpRequest, "skipVerify" | "ca">): http.Agent {
    if (url.protocol === "http:") return this.http;
    if (req.skipVerify) return this.insecure;
    if (req.ca?.length) {
      const key = req.ca.map((b) => b.toString("base64").slice(0, 64)).join("|");
      let a = this.byCa.get(key);
      if (!a) this.byCa.set(key, (a = new https.Agent({ keepAlive: true, maxSockets: 32, ca: req.ca })));
      return a;
    }
    return this.https;
  }

  /** Close the idle connections (those in use close when their response ends). */
  destroy(): void {
    for (const a of [this.http, this.https, this.insecure, ...this.byCa.values()]) a.destroy();
    this.byCa.clear();
  }
}

export class HttpError extends Error {
  constructor(message: string, readonly status?: number, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "HttpError";
  }
}

const RETRYABLE_CODES = new Set(["ECONNRESET", "ECONNREFUSED", "EPIPE", "ETIMEDOUT", "EAI_AGAIN", "ENETUNREACH", "EHOSTUNREACH", "ECONNABORTED", "UND_ERR_SOCKET", "ERR_STREAM_PREMATURE_CLOSE"]);

/** True for transient network failures worth another try. */
export function isRetryableError(err: unknown): boolean {
  const e = err as { code?: string; message?: string; name?: string } | undefined;
  if (!e) return false;
  if (e.name === "AbortError") return false;
  if (e.code && RETRYABLE_CODES.has(e.code)) return true;
  return /socket hang up|premature close|aborted/i.test(e.message ?? "");
}

export const isRetryableStatus = (s: number): boolean => s === 408 || s === 429 || s === 500 || s === 502 || s === 503 || s === 504;

function abortError(signal: AbortSignal): Error {
  const r = signal.reason;
  return r instanceof Error ? r : Object.assign(new Error("request aborted"), { name: "AbortError" });
}

function once(req: HttpRequest, url: URL): Promise<HttpResponse> {
  return new Promise((resolve, reject) => {
    if (req.signal?.aborted) return reject(abortError(req.signal));
    const mod = url.protocol === "https:" ? https : http;
    const headers: Record<string, string> = { ...(req.headers ?? {}) };
    if (req.contentLength !== undefined) headers["content-length"] = String(req.contentLength);
    else if (Buffer.isBuffer(req.body)) headers["content-length"] = String(req.body.length);
    const r = mod.request(url, { method: req.method, headers, agent: req.agents.for(url, req) });
    let settled = false;
    const onAbort = (): void => {
      r.destroy(abortError(req.signal!));
    };
    req.signal?.addEventListener("abort", onAbort, { once: true });
    r.setTimeout(IDLE_TIMEOUT_MS, () => r.destroy(Object.assign(new Error(`${req.method} ${url.href}: no activity for ${IDLE_TIMEOUT_MS / 1000}s`), { code: "ETIMEDOUT" })));
    r.on("error", (err) => {
      req.signal?.removeEventListener("abort", onAbort);
      if (!settled) {
        settled = true;
        reject(err);
      }
    });
    r.on("response", (res) => {
      settled = true;
      res.on("close", () => req.signal?.removeEventListener("abort", onAbort));
      // The inactivity timeout keeps guarding the body.
      res.on("error", () => undefined);
      resolve({ status: res.statusCode ?? 0, headers: res.headers, url: url.href, body: res });
    });
    const body = req.body;
    if (body === undefined) r.end();
    else if (Buffer.isBuffer(body)) r.end(body);
    else {
      Promise.resolve(body()).then((s) => {
        s.on("error", (e) => r.destroy(e));
        s.pipe(r);
      }, (e) => r.destroy(e as Error));
    }
  });
}

/** One request, following redirects. Authorization is sent only to the original host. */
export async function send(req: HttpRequest): Promise<HttpResponse> {
  let url = new URL(req.url);
  const origin = url.host;
  let cur = req;
  for (let i = 0; ; i++) {
    const res = await once(cur, url);
    const loc = res.headers.location;
    if (req.followRedirects === false || ![301, 302, 303, 307, 308].includes(res.status) || !loc) return res;
    res.body.resume();
    if (i >= MAX_REDIRECTS) throw new HttpError(`${req.method} ${req.url}: too many redirects`);
    url = new URL(loc, url);
    const headers = { ...(cur.headers ?? {}) };
    if (url.host !== origin) {
      for (const k of Object.keys(headers)) if (k.toLowerCase() === "authorization") delete headers[k];
    }
    if (res.status === 303 || ((res.status === 301 || res.status === 302) && cur.method === "POST")) {
      cur = { ...cur, method: "GET", body: undefined, contentLength: undefined, headers };
      for (const k of Object.keys(headers)) if (/^content-(length|type)$/i.test(k)) delete headers[k];
    } else {
      cur = { ...cur, headers };
    }
  }
}

export const sleep = (ms: number, signal?: AbortSignal): Promise<void> =>
  new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(abortError(signal));
    const t = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = (): void => {
      clearTimeout(t);
      reject(abortError(signal!));
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });

/** Backoff before try `n` (1-based retry count): exponential with full jitter, capped. */
export function backoffMs(policy: RetryPolicy, n: number, retryAfter?: string): number {
  const ra = retryAfter ? Number(retryAfter) : NaN;
  if (Number.isFinite(ra) && ra >= 0) return Math.min(ra * 1000, policy.maxMs);
  const cap = Math.min(policy.maxMs, policy.baseMs * 2 ** (n - 1));
  return cap / 2 + Math.random() * (cap / 2);
}

/** Read a (small) body fully, refusing more than `limit` bytes. */
export async function readBody(res: HttpResponse, limit = 8 << 20): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of res.body) {
    n += (c as Buffer).length;
    if (n > limit) {
      res.body.destroy();
      throw new HttpError(`${res.url}: response larger than ${limit} bytes`, res.status);
    }
    chunks.push(c as Buffer);
  }
  return Buffer.concat(chunks);
}

/** Discard a body so the connection can be reused. */
export function discard(res: HttpResponse): void {
  res.body.resume();
}
