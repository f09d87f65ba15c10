/**
 * The streaming server's request cache, as the kubelet's: each Exec/Attach/PortForward RPC parks its
 * request under a random token and answers with a URL naming it; the first HTTP request for that URL
 * takes it out (single use). Tokens expire after `ttlMs` (one minute) and at most `max` (1000) wait at
 * once; beyond that the RPC fails with ResourceExhausted.
 */
import { randomBytes } from "node:crypto";
import { errResourceExhausted } from "#libs/errdefs";

export class RequestCache<T> {
  private readonly entries = new Map<string, { req: T; expires: number }>();

  constructor(private readonly ttlMs = 60_000, private readonly max = 1000, private readonly now = () => Date.now()) {}

  /** Park `req`; returns its token (8 random bytes, base64url). */
  insert(req: T): string {
    this.evictExpired();
    if (this.entries.size >= this.max) throw errResourceExhausted("maximum number of in-flight requests exceeded");
    let token: string;
    do token = randomBytes(8).toString("base64url");
    while (this.entries.has(token));
    this.entries.set(token, { req, expires: this.now() + this.ttlMs });
    return token;
  }

  /** Take the request out; undefined for an unknown, used or expired token. */
  consume(token: string): T | undefined {
    const e = this.entries.get(token);
    if (!e) return undefined;
    this.entries.delete(token);
    return e.expires > this.now() ? e.req : undefined;
  }

  get size(): number {
    return this.entries.size;
  }

  private evictExpired(): void {
    const t = this.now();
    for (const [k, e] of this.entries) if (e.expires <= t) this.entries.delete(k);
  }
}
