/**
 * A client for one repository of an OCI distribution registry (`/v2/<name>/manifests|blobs/...`):
 * resolve a tag or digest to a descriptor, fetch blobs and manifests (resuming a broken download with a
 * Range request from where it stopped), check for blobs, upload blobs and manifests. Hosts come from
 * the hosts directory (mirrors first, upstream last); every request goes through auth and retries.
 */
import * as fs from "node:fs";
import { createHash } from "node:crypto";
import { Readable } from "node:stream";
import { isIndexType, isManifestType, isSchema1, MediaTypes, type OciDescriptor } from "../oci";
import { Authorizer, repositoryScope, UnauthorizedError, type CredentialsFn } from "./auth";
import { configureHosts, type HostCapability, type RegistryHost } from "./hosts";
import { backoffMs, DEFAULT_RETRY, discard, HttpAgents, HttpError, isRetryableError, isRetryableStatus, readBody, send, sleep, type HttpResponse, type RetryPolicy } from "./http";
import { formatReference, objectOf, parseReference, type Reference } from "./reference";

export interface RegistryClientOptions {
  /** The reference as given (`host/path[:tag][@digest]`). */
  reference: string;
  hostDir?: string;
  defaultScheme?: string;
  headers?: Record<string, string>;
  credentials?: CredentialsFn;
  retry?: RetryPolicy;
  /** Keep-alive connections shared with other clients (the transfer process's); else the client's own. */
  agents?: HttpAgents;
  userAgent?: string;
  /** Receives one line per HTTP exchange (http_debug). */
  debug?: (line: string) => void;
}

/** Classified failures, so callers can map them to errdefs classes. */
export class RegistryError extends Error {
  constructor(message: string, readonly kind: "not-found" | "unauthorized" | "invalid" | "unavailable" | "failed", options?: { cause?: unknown }) {
    super(message, options);
    this.name = "RegistryError";
  }
}

export const MANIFEST_ACCEPT = [MediaTypes.OciIndex, MediaTypes.OciManifest, MediaTypes.DockerManifestList, MediaTypes.DockerManifest, "*/*"].join(", ");
const MAX_MANIFEST = 4 << 20;

interface Req {
  method: string;
  /** Path below `/v2/<name>/`, or an absolute URL (upload locations). */
  path: string;
  headers?: Record<string, string>;
  body?: Buffer | (() => Readable | Promise<Readable>);
  contentLength?: number;
  push?: boolean;
  /** More token scopes (e.g. pull on the repository a blob is mounted from). */
  scopes?: string[];
  signal?: AbortSignal;
}

function header(res: HttpResponse, name: string): string | undefined {
  const v = res.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

export class RegistryClient {
  readonly ref: Reference;
  readonly hosts: RegistryHost[];
  private readonly auth: Authorizer;
  private readonly retry: RetryPolicy;
  private readonly ca = new Map<RegistryHost, Buffer[]>();
  private readonly agents: HttpAgents;

  constructor(private readonly opts: RegistryClientOptions) {
    this.ref = parseReference(opts.reference);
    this.hosts = configureHosts(this.ref.domain, { hostDir: opts.hostDir, defaultScheme: opts.defaultScheme, headers: opts.headers });
    this.agents = opts.agents ?? new HttpAgents();
    this.auth = new Authorizer({ credentials: opts.credentials, reference: opts.reference, userAgent: opts.userAgent, debug: opts.debug, skipVerify: this.hosts.some((h) => h.skipVerify), agents: this.agents });
    this.retry = opts.retry ?? DEFAULT_RETRY;
  }

  private hostsWith(cap: HostCapability): RegistryHost[] {
    const hs = this.hosts.filter((h) => h.capabilities.has(cap));
    if (!hs.length) throw new RegistryError(`no host of ${this.ref.domain} can ${cap}`, "failed");
    return hs;
  }

  private caFor(h: RegistryHost): Buffer[] | undefined {
    if (!h.caFiles.length) return undefined;
    let c = this.ca.get(h);
    if (!c) this.ca.set(h, (c = h.caFiles.map((f) => fs.readFileSync(f))));
    return c;
  }

  /** One logical request to `host`, with auth challenges answered and transient failures retried. */
  private async request(host: RegistryHost, r: Req): Promise<HttpResponse> {
    const base = `${host.scheme}://${host.host}${host.path === "/" ? "" : host.path}/${this.ref.path}/`;
    const url = /^https?:\/\//.test(r.path) ? r.path : base + r.path;
    const sameHost = new URL(url).host === host.host;
    const scopes = [repositoryScope(this.ref.path, !!r.push), ...(r.scopes ?? [])];
    let authTries = 0;
    for (let attempt = 1; ; attempt++) {
      const headers: Record<string, string> = { "user-agent": this.opts.userAgent ?? "flotilla", ...host.headers, ...(r.headers ?? {}) };
      let authz: string | undefined;
      try {
        authz = sameHost ? await this.auth.authorization(host.host, scopes, r.signal) : undefined;
      } catch (e) {
        if (e instanceof UnauthorizedError) throw new RegistryError(`${this.ref.domain}: ${e.message}`, "unauthorized", { cause: e });
        throw new RegistryError(`${this.ref.domain}: authorization failed: ${(e as Error).message}`, "unavailable", { cause: e });
      }
      if (authz) headers.authorization = authz;
      let res: HttpResponse;
      try {
        res = await send({ method: r.method, url, headers, body: r.body, contentLength: r.contentLength, signal: r.signal, skipVerify: host.skipVerify, ca: this.caFor(host), agents: this.agents });
      } catch (e) {
        this.opts.debug?.(`${r.method} ${url} -> ${(e as Error).message}`);
        if (attempt < this.retry.attempts && isRetryableError(e) && !r.signal?.aborted) {
          await sleep(backoffMs(this.retry, attempt), r.signal);
          continue;
        }
        throw new RegistryError(`${r.method} ${url}: ${(e as Error).message}`, "unavailable", { cause: e });
      }
      this.opts.debug?.(`${r.method} ${url} -> ${res.status}`);
      if (res.status === 401 && authTries < 2) {
        authTries++;
        discard(res);
        let again: boolean;
        try {
          again = await this.auth.handleUnauthorized(host.host, res, scopes, authz, r.signal);
        } catch (e) {
          if (e instanceof UnauthorizedError) throw new RegistryError(`${this.ref.domain}: ${e.message}`, "unauthorized", { cause: e });
          throw new RegistryError(`${this.ref.domain}: authorization failed: ${(e as Error).message}`, "unavailable", { cause: e });
        }
        if (again) {
          attempt--;
          continue;
        }
      }
      if (res.status === 401 || res.status === 403) {
        const body = (await readBody(res, 64 << 10).catch(() => Buffer.alloc(0))).toString("utf8").trim().slice(0, 300);
        throw new RegistryError(`${r.method} ${url}: ${res.status} ${res.status === 401 ? "unauthorized" : "forbidden"}${body ? `: ${body}` : ""}`, "unauthorized");
      }
      if (isRetryableStatus(res.status) && attempt < this.retry.attempts) {
        discard(res);
        await sleep(backoffMs(this.retry, attempt, header(res, "retry-after")), r.signal);
        continue;
      }
      return res;
    }
  }

  private async failure(res: HttpResponse, what: string): Promise<RegistryError> {
    const body = (await readBody(res, 64 << 10).catch(() => Buffer.alloc(0))).toString("utf8").trim().slice(0, 300);
    const kind = res.status === 404 ? "not-found" : res.status >= 500 ? "unavailable" : "failed";
    return new RegistryError(`${what}: unexpected status ${res.status}${body ? `: ${body}` : ""}`, kind);
  }

  /** Resolve the reference to the descriptor of its root (index or manifest). */
  async resolve(signal?: AbortSignal): Promise<{ name: string; desc: OciDescriptor }> {
    const obj = objectOf(this.ref);
    const name = formatReference(this.ref);
    let lastErr: Error | undefined;
    for (const host of this.hostsWith("resolve")) {
      try {
        const head = await this.request(host, { method: "HEAD", path: `manifests/${obj}`, headers: { accept: MANIFEST_ACCEPT }, signal });
        discard(head);
        if (head.status === 404) {
          lastErr = new RegistryError(`${name}: not found`, "not-found");
          continue;
        }
        let mediaType = (header(head, "content-type") ?? "").split(";")[0]!.trim();
        let digest = this.ref.digest ?? header(head, "docker-content-digest");
        let size = Number(header(head, "content-length") ?? NaN);
        if (head.status !== 200 || !digest || !Number.isSafeInteger(size) || !isRootType(mediaType)) {
          // Some registries answer HEAD poorly: fetch the manifest and compute what is missing.
          const get = await this.request(host, { method: "GET", path: `manifests/${obj}`, headers: { accept: MANIFEST_ACCEPT }, signal });
          if (get.status === 404) {
            discard(get);
            lastErr = new RegistryError(`${name}: not found`, "not-found");
            continue;
          }
          if (get.status !== 200) throw await this.failure(get, `resolve ${name}`);
          const body = await readBody(get, MAX_MANIFEST);
          const computed = "sha256:" + createHash("sha256").update(body).digest("hex");
          if (this.ref.digest && this.ref.digest.startsWith("sha256:") && computed !== this.ref.digest) {
            throw new RegistryError(`resolve ${name}: manifest digest ${computed} does not match the reference`, "invalid");
          }
          digest = this.ref.digest ?? header(get, "docker-content-digest") ?? computed;
          size = body.length;
          mediaType = sniffMediaType((header(get, "content-type") ?? "").split(";")[0]!.trim(), body);
        }
        if (isSchema1(mediaType)) throw new RegistryError(`${name}: schema 1 image manifests are no longer supported`, "invalid");
        if (!isRootType(mediaType)) throw new RegistryError(`${name}: unsupported manifest media type ${JSON.stringify(mediaType)}`, "invalid");
        return { name, desc: { mediaType, digest, size } };
      } catch (e) {
        if (e instanceof RegistryError && (e.kind === "unauthorized" || e.kind === "invalid")) throw e;
        lastErr = e as Error;
      }
    }
    throw lastErr ?? new RegistryError(`${name}: not found`, "not-found");
  }

  private objectPath(desc: OciDescriptor): { path: string; headers: Record<string, string> } {
    if (isRootType(desc.mediaType)) return { path: `manifests/${desc.digest}`, headers: { accept: [desc.mediaType, "*/*"].join(", ") } };
    return { path: `blobs/${desc.digest}`, headers: {} };
  }

  /** Open `desc` at byte `offset` on the first host that has it; `offset` is what the stream really starts at. */
  async open(desc: OciDescriptor, offset = 0, signal?: AbortSignal): Promise<{ stream: Readable; offset: number }> {
    const { path, headers } = this.objectPath(desc);
    let lastErr: Error | undefined;
    for (const host of this.hostsWith("pull")) {
      try {
        const h = offset > 0 ? { ...headers, range: `bytes=${offset}-` } : headers;
        const res = await this.request(host, { method: "GET", path, headers: h, signal });
        if (res.status === 206 && offset > 0) {
          const cr = header(res, "content-range") ?? "";
          const m = /^bytes (\d+)-/.exec(cr);
          if (m && Number(m[1]) === offset) return { stream: res.body, offset };
          discard(res);
          continue;
        }
        if (res.status === 416 && offset > 0) {
          discard(res);
          return this.open(desc, 0, signal);
        }
        if (res.status === 200) return { stream: res.body, offset: 0 };
        const err = await this.failure(res, `fetch ${desc.digest} from ${host.host}`);
        lastErr = err;
        if (err.kind === "unavailable" && isManifestType(desc.mediaType)) continue;
      } catch (e) {
        if (e instanceof RegistryError && e.kind === "unauthorized") throw e;
        lastErr = e as Error;
      }
    }
    throw lastErr ?? new RegistryError(`${desc.digest}: not found`, "not-found");
  }

  /**
   * The bytes of `desc` from `start`, as a stream that survives broken connections: on a transient
   * error it asks again with a Range from the current position (with backoff), up to the retry limit.
   * More bytes than `desc.size` is an error.
   */
  fetch(desc: OciDescriptor, start = 0, signal?: AbortSignal): Readable {
    return Readable.from(this.chunks(desc, start, signal), { objectMode: false, highWaterMark: 1 << 20 });
  }

  /** What fetch() streams, as the chunks the connection delivers (no stream buffering or copies in between). */
  chunks(desc: OciDescriptor, start = 0, signal?: AbortSignal): AsyncGenerator<Buffer> {
    const self = this;
    async function* body(): AsyncGenerator<Buffer> {
      let pos = start;
      let failures = 0;
      for (;;) {
        let opened: { stream: Readable; offset: number };
        try {
          opened = await self.open(desc, pos, signal);
        } catch (e) {
          if (!(e instanceof RegistryError && e.kind === "unavailable") || ++failures >= self.retry.attempts || signal?.aborted) throw e;
          await sleep(backoffMs(self.retry, failures), signal);
          continue;
        }
        let skip = pos - opened.offset;
        try {
          for await (const c of opened.stream) {
            let chunk = c as Buffer;
            if (skip > 0) {
              if (chunk.length <= skip) {
                skip -= chunk.length;
                continue;
              }
              chunk = chunk.subarray(skip);
              skip = 0;
            }
            pos += chunk.length;
            if (desc.size > 0 && pos > desc.size) throw new RegistryError(`fetch ${desc.digest}: more data than the ${desc.size} bytes expected`, "invalid");
            failures = 0;
            yield chunk;
          }
        } catch (e) {
          opened.stream.destroy();
          if (e instanceof RegistryError || !isRetryableError(e) || ++failures >= self.retry.attempts || signal?.aborted) throw e;
          self.opts.debug?.(`fetch ${desc.digest}: ${(e as Error).message}; resuming at ${pos}`);
          await sleep(backoffMs(self.retry, failures), signal);
          continue;
        }
        if (desc.size > 0 && pos < desc.size) {
          if (++failures >= self.retry.attempts) throw new RegistryError(`fetch ${desc.digest}: body ended at ${pos} of ${desc.size} bytes`, "unavailable");
          self.opts.debug?.(`fetch ${desc.digest}: body ended at ${pos} of ${desc.size}; resuming`);
          await sleep(backoffMs(self.retry, failures), signal);
          continue;
        }
        return;
      }
    }
    return body();
  }

  /** A small object (manifest, index, config) fully in memory, its digest verified. */
  async fetchBytes(desc: OciDescriptor, signal?: AbortSignal): Promise<Buffer> {
    if (desc.size > MAX_MANIFEST && !isRootType(desc.mediaType)) throw new RegistryError(`${desc.digest}: ${desc.size} bytes is too large to hold in memory`, "invalid");
    const chunks: Buffer[] = [];
    for await (const c of this.chunks(desc, 0, signal)) chunks.push(c);
    const b = Buffer.concat(chunks);
    verify(desc, b);
    return b;
  }

  /** True when the registry already has `desc` (HEAD on the blob or manifest). */
  async exists(desc: OciDescriptor, signal?: AbortSignal): Promise<boolean> {
    const { path, headers } = this.objectPath(desc);
    for (const host of this.hostsWith("push")) {
      const res = await this.request(host, { method: "HEAD", path, headers, push: true, signal });
      discard(res);
      if (res.status === 200) return true;
      if (res.status === 404) return false;
      throw new RegistryError(`HEAD ${path}: unexpected status ${res.status}`, res.status >= 500 ? "unavailable" : "failed");
    }
    return false;
  }

  /**
   * Upload a blob: POST an upload session, then PUT the whole body with its digest. `open` is called
   * per try. With `mountFrom` (repositories of the same registry that have the blob), a cross-repository
   * mount is tried first; "mounted" means no bytes were sent.
   */
  async pushBlob(desc: OciDescriptor, open: () => Readable | Promise<Readable>, signal?: AbortSignal, mountFrom: string[] = []): Promise<"uploaded" | "mounted"> {
    const host = this.hostsWith("push")[0]!;
    for (const from of mountFrom.filter((r) => r && r !== this.ref.path).slice(0, 3)) {
      const m = await this.request(host, {
        method: "POST", path: `blobs/uploads/?mount=${encodeURIComponent(desc.digest)}&from=${encodeURIComponent(from)}`,
        headers: { "content-length": "0" }, push: true, scopes: [repositoryScope(from, false)], signal,
      }).catch(() => undefined);
      if (!m) continue;
      discard(m);
      if (m.status === 201) return "mounted";
    }
    for (let attempt = 1; ; attempt++) {
      const start = await this.request(host, { method: "POST", path: "blobs/uploads/", headers: { "content-length": "0" }, push: true, signal });
      discard(start);
      if (start.status === 201) return "mounted";
      if (start.status !== 202) throw await this.failure(start, `start upload of ${desc.digest}`);
      const loc = header(start, "location");
      if (!loc) throw new RegistryError(`start upload of ${desc.digest}: no Location`, "failed");
      const u = new URL(loc, `${host.scheme}://${host.host}/`);
      u.searchParams.set("digest", desc.digest);
      try {
        const put = await this.request(host, {
          method: "PUT", path: u.href, push: true, signal,
          headers: { "content-type": "application/octet-stream" }, body: open, contentLength: desc.size,
        });
        if (put.status === 201 || put.status === 204) {
          discard(put);
          return "uploaded";
        }
        throw await this.failure(put, `upload ${desc.digest}`);
      } catch (e) {
        if (attempt < this.retry.attempts && e instanceof RegistryError && e.kind === "unavailable" && !signal?.aborted) {
          await sleep(backoffMs(this.retry, attempt), signal);
          continue;
        }
        throw e;
      }
    }
  }

  /** PUT a manifest or index under `tagOrDigest`. */
  async pushManifest(desc: OciDescriptor, bytes: Buffer, tagOrDigest: string, signal?: AbortSignal): Promise<void> {
    const host = this.hostsWith("push")[0]!;
    const res = await this.request(host, { method: "PUT", path: `manifests/${tagOrDigest}`, headers: { "content-type": desc.mediaType }, body: bytes, push: true, signal });
    if (res.status === 201 || res.status === 200 || res.status === 202) {
      discard(res);
      return;
    }
    throw await this.failure(res, `push manifest ${desc.digest} as ${tagOrDigest}`);
  }
}

function isRootType(mt: string): boolean {
  return isIndexType(mt) || isManifestType(mt) || isSchema1(mt);
}

/** Guess a manifest's media type from its JSON when the registry's Content-Type is vague. */
export function sniffMediaType(contentType: string, body: Buffer): string {
  if (isRootType(contentType)) return contentType;
  try {
    const j = JSON.parse(body.toString("utf8")) as { mediaType?: string; manifests?: unknown; config?: unknown; schemaVersion?: number; fsLayers?: unknown };
    if (typeof j.mediaType === "string" && j.mediaType) return j.mediaType;
    if (j.schemaVersion === 1 || j.fsLayers) return MediaTypes.DockerSchema1Manifest;
    if (j.manifests) return MediaTypes.OciIndex;
    if (j.config) return MediaTypes.OciManifest;
  } catch {
    /* not JSON */
  }
  return contentType;
}

/** Check size and digest of bytes fetched for `desc`. */
export function verify(desc: OciDescriptor, b: Buffer): void {
  if (b.length !== desc.size) throw new RegistryError(`${desc.digest}: got ${b.length} bytes, expected ${desc.size}`, "invalid");
  const [alg, hex] = desc.digest.split(":");
  if (alg !== "sha256" && alg !== "sha512" && alg !== "sha384") throw new RegistryError(`${desc.digest}: unsupported digest algorithm`, "invalid");
  const got = createHash(alg).update(b).digest("hex");
  if (got !== hex) throw new RegistryError(`${desc.digest}: content digest ${alg}:${got} does not match`, "invalid");
}

export { HttpError };
