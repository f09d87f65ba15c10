/**
 * Registry authorization: `WWW-Authenticate` challenges, Basic auth, and Bearer tokens from the realm
 * the registry names (docker's token protocol: GET with Basic credentials or anonymously; OAuth2 POST
 * with a refresh token). Credentials are asked for once per host through a callback, so the transfer
 * service can ask its client over the auth stream.
 */
import { backoffMs, DEFAULT_RETRY, HttpError, type HttpAgents, isRetryableError, isRetryableStatus, readBody, send, sleep, type HttpResponse } from "./http";

export const AuthTypes = { None: "none", Credentials: "credentials", Refresh: "refresh", Header: "header" } as const;
export type AuthType = (typeof AuthTypes)[keyof typeof AuthTypes];

export interface Credentials {
  type: AuthType;
  username?: string;
  /** Password, refresh token or raw Authorization header value, by type. */
  secret?: string;
  expireAt?: Date;
}

export interface CredentialRequest {
  host: string;
  reference: string;
  wwwAuthenticate: string[];
}

export type CredentialsFn = (req: CredentialRequest) => Promise<Credentials | undefined>;

export interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

/** Parse one or more WWW-Authenticate header values (RFC 7235 auth-params, quoted strings). */
export function parseChallenges(values: readonly string[]): Challenge[] {
  const out: Challenge[] = [];
  for (const v of values) {
    let i = 0;
    const s = v;
    const skipWs = (): void => {
      while (i < s.length && (s[i] === " " || s[i] === "\t")) i++;
    };
    const token = (): string => {
      const st = i;
      while (i < s.length && /[A-Za-z0-9!#$%&'*+.^_`|~-]/.test(s[i]!)) i++;
      return s.slice(st, i);
    };
    while (i < s.length) {
      skipWs();
      if (s[i] === ",") {
        i++;
        continue;
      }
      const scheme = token();
      if (!scheme) {
        i++;
        continue;
      }
      const ch: Challenge = { scheme: scheme.toLowerCase(), params: {} };
      out.push(ch);
      for (;;) {
        skipWs();
        const save = i;
        const key = token();
        skipWs();
        if (!key || s[i] !== "=") {
          i = save;
          break;
        }
        i++;
        skipWs();
        let val = "";
        if (s[i] === '"') {
          i++;
          while (i < s.length && s[i] !== '"') {
            if (s[i] === "\\" && i + 1 < s.length) i++;
            val += s[i++];
          }
          i++;
        } else {
          val = token();
        }
        ch.params[key.toLowerCase()] = val;
        skipWs();
        if (s[i] === ",") i++;
        else break;
      }
    }
  }
  return out;
}

export class UnauthorizedError extends Error {
  constructor(message: string, readonly status = 401) {
    super(message);
    this.name = "UnauthorizedError";
  }
}

interface Token {
  value: string;
  expires: number;
}

interface HostAuth {
  scheme?: "basic" | "bearer" | "header";
  challenge?: Challenge;
  creds?: Credentials;
  credsAsked: boolean;
  tokens: Map<string, Token>;
}

export interface AuthorizerOptions {
  credentials?: CredentialsFn;
  /** The reference being transferred, passed to the credentials callback. */
  reference: string;
  skipVerify?: boolean;
  userAgent?: string;
  debug?: (line: string) => void;
  /** Connections to the token servers. */
  agents: HttpAgents;
}

const basic = (user: string, secret: string): string => "Basic " + Buffer.from(`${user}:${secret}`).toString("base64");

export class Authorizer {
  private readonly hosts = new Map<string, HostAuth>();
  private readonly pendingCreds = new Map<string, Promise<Credentials | undefined>>();

  constructor(private readonly opts: AuthorizerOptions) {}

  private state(host: string): HostAuth {
    let s = this.hosts.get(host);
    if (!s) this.hosts.set(host, (s = { credsAsked: false, tokens: new Map() }));
    return s;
  }

  /** The Authorization header for a request to `host` needing `scopes`, if any is known yet. */
  async authorization(host: string, scopes: readonly string[], signal?: AbortSignal): Promise<string | undefined> {
    const s = this.state(host);
    switch (s.scheme) {
      case undefined:
        return undefined;
      case "header":
        return s.creds?.secret;
      case "basic":
        return s.creds?.username !== undefined ? basic(s.creds.username, s.creds.secret ?? "") : undefined;
      case "bearer": {
        const key = scopeKey(s, scopes);
        const t = s.tokens.get(key);
        if (t && t.expires > Date.now() + 5000) return `Bearer ${t.value}`;
        const fresh = await this.fetchToken(host, s, key, signal);
        return `Bearer ${fresh}`;
      }
    }
  }

  /**
   * Learn from a 401 answer. Returns true when a retry may succeed (new scheme, credentials or token);
   * false when the same request would fail again.
   */
  async handleUnauthorized(host: string, res: HttpResponse, scopes: readonly string[], sentAuth: string | undefined, signal?: AbortSignal): Promise<boolean> {
    const raw = res.headers["www-authenticate"];
    const values = raw === undefined ? [] : Array.isArray(raw) ? raw : [raw];
    const challenges = parseChallenges(values);
    const s = this.state(host);
    const bearer = challenges.find((c) => c.scheme === "bearer");
    const basicCh = challenges.find((c) => c.scheme === "basic");
    if (!s.credsAsked) await this.askCredentials(host, s, values);
    if (s.creds?.type === AuthTypes.Header) {
      if (s.scheme === "header") return false;
      s.scheme = "header";
      return true;
    }
    if (bearer) {
      s.scheme = "bearer";
      s.challenge = bearer;
      const key = scopeKey(s, scopes);
      const t = s.tokens.get(key);
      // The token we sent was refused (expired, revoked or too narrow): fetch a fresh one.
      if (t && sentAuth === `Bearer ${t.value}`) s.tokens.delete(key);
      return true;
    }
    if (basicCh) {
      if (s.scheme === "basic" && sentAuth) return false;
      if (!s.creds?.username && s.creds?.type !== AuthTypes.Credentials) return false;
      s.scheme = "basic";
      return true;
    }
    return false;
  }

  private async askCredentials(host: string, s: HostAuth, www: string[]): Promise<void> {
    let p = this.pendingCreds.get(host);
    if (!p) {
      p = this.opts.credentials ? this.opts.credentials({ host, reference: this.opts.reference, wwwAuthenticate: www }) : Promise.resolve(undefined);
      this.pendingCreds.set(host, p);
    }
    const c = await p;
    s.credsAsked = true;
    if (c && c.type !== AuthTypes.None) s.creds = c;
  }

  private async fetchToken(host: string, s: HostAuth, key: string, signal?: AbortSignal): Promise<string> {
    const ch = s.challenge!;
    const realm = ch.params.realm;
    if (!realm) throw new UnauthorizedError(`${host}: bearer challenge without realm`);
    const scopes = key ? key.split(" ") : [];
    const service = ch.params.service ?? "";
    const c = s.creds;
    const headers: Record<string, string> = { "user-agent": this.opts.userAgent ?? "flotilla" };
    let req: { method: string; url: string; body?: Buffer; headers: Record<string, string> };
    if (c?.type === AuthTypes.Refresh || (c?.type === AuthTypes.Credentials && !c.username && c.secret)) {
      const form = new URLSearchParams({ grant_type: "refresh_token", refresh_token: c.secret ?? "", service, client_id: "flotilla", scope: scopes.join(" ") });
      req = { method: "POST", url: realm, body: Buffer.from(form.toString()), headers: { ...headers, "content-type": "application/x-www-form-urlencoded; charset=utf-8" } };
    } else {
      const u = new URL(realm);
      if (service) u.searchParams.set("service", service);
      for (const sc of scopes) u.searchParams.append("scope", sc);
      if (c?.type === AuthTypes.Credentials && c.username) headers.authorization = basic(c.username, c.secret ?? "");
      req = { method: "GET", url: u.href, headers };
    }
    for (let attempt = 1; ; attempt++) {
      let res: HttpResponse;
      try {
        res = await send({ ...req, signal, skipVerify: this.opts.skipVerify, agents: this.opts.agents });
      } catch (e) {
        if (attempt < DEFAULT_RETRY.attempts && isRetryableError(e)) {
          await sleep(backoffMs(DEFAULT_RETRY, attempt), signal);
          continue;
        }
        throw e;
      }
      this.opts.debug?.(`${req.method} ${req.url.replace(/\?.*/, "")} -> ${res.status}`);
      if (isRetryableStatus(res.status) && attempt < DEFAULT_RETRY.attempts) {
        res.body.resume();
        await sleep(backoffMs(DEFAULT_RETRY, attempt, res.headers["retry-after"] as string | undefined), signal);
        continue;
      }
      const body = await readBody(res, 1 << 20);
      if (res.status === 401 || res.status === 403) throw new UnauthorizedError(`failed to fetch token from ${realm}: ${res.status} ${body.toString("utf8").slice(0, 200).trim()}`, res.status);
      if (res.status !== 200) throw new HttpError(`failed to fetch token from ${realm}: unexpected status ${res.status}`, res.status);
      let j: { token?: string; access_token?: string; expires_in?: number };
      try {
        j = JSON.parse(body.toString("utf8"));
      } catch {
        throw new HttpError(`token server ${realm} answered invalid JSON`);
      }
      const value = j.access_token || j.token;
      if (!value) throw new HttpError(`token server ${realm} answered no token`);
      const ttl = Number(j.expires_in) > 0 ? Number(j.expires_in) : 60;
      s.tokens.set(key, { value, expires: Date.now() + ttl * 1000 });
      return value;
    }
  }
}

function scopeKey(s: Pick<HostAuth, "challenge">, scopes: readonly string[]): string {
  const all = new Set<string>(scopes);
  const cs = s.challenge?.params.scope;
  if (cs) for (const x of cs.split(" ")) if (x) all.add(x);
  return [...all].sort().join(" ");
}

export function repositoryScope(path: string, push: boolean): string {
  return `repository:${path}:${push ? "pull,push" : "pull"}`;
}
