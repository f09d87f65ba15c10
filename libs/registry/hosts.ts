/**
 * Which endpoints serve a registry: containerd's hosts directory convention (`<dir>/<host[:port]>/hosts.toml`,
 * falling back to `<dir>/_default/hosts.toml`):
 *
 *   server = "https://registry.example.com"          # the upstream, tried last
 *   [host."http://mirror.local:5000"]
 *     capabilities = ["pull", "resolve"]            # default: pull, resolve, push
 *     skip_verify = true
 *     override_path = false                          # true: the URL path replaces /v2
 *     [host."http://mirror.local:5000".header]
 *       x-custom = "1"
 *
 * Without a file the registry itself is the only host: HTTPS, except loopback hosts and a default
 * scheme of "http" (ctr's --plain-http), which use plain HTTP.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { parse as parseToml } from "smol-toml";
import { isLocalhost } from "./reference";

export type HostCapability = "pull" | "resolve" | "push";

export interface RegistryHost {
  scheme: "http" | "https";
  /** host[:port] */
  host: string;
  /** API root path, `/v2` unless overridden. */
  path: string;
  capabilities: ReadonlySet<HostCapability>;
  headers: Record<string, string>;
  skipVerify: boolean;
  /** PEM files of extra CAs. */
  caFiles: string[];
}

export interface HostOptions {
  /** Directory holding `<host>/hosts.toml`. */
  hostDir?: string;
  /** "http" or "https" for the registry itself; "" picks HTTPS except for loopback hosts. */
  defaultScheme?: string;
  /** Headers for every request. */
  headers?: Record<string, string>;
}

const ALL: ReadonlySet<HostCapability> = new Set<HostCapability>(["pull", "resolve", "push"]);

export class HostsConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "HostsConfigError";
  }
}

function hostDirCandidates(dir: string, host: string): string[] {
  // containerd maps `host:port` to a directory of the same name; IPv6 brackets are kept.
  return [path.join(dir, host), path.join(dir, "_default")];
}

function parseUrl(u: string, where: string): { scheme: "http" | "https"; host: string; path: string } {
  let url: URL;
  try {
    url = new URL(u.includes("://") ? u : `https://${u}`);
  } catch {
    throw new HostsConfigError(`${where}: invalid URL ${JSON.stringify(u)}`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") throw new HostsConfigError(`${where}: unsupported scheme ${url.protocol}`);
  return { scheme: url.protocol === "http:" ? "http" : "https", host: url.host, path: url.pathname.replace(/\/+$/, "") };
}

function apiPath(p: string, override: boolean): string {
  if (override) return p || "/";
  if (p.endsWith("/v2")) return p;
  return `${p}/v2`;
}

function caps(v: unknown, where: string): ReadonlySet<HostCapability> {
  if (v === undefined) return ALL;
  if (!Array.isArray(v)) throw new HostsConfigError(`${where}: capabilities must be a list`);
  const out = new Set<HostCapability>();
  for (const c of v) {
    if (c !== "pull" && c !== "resolve" && c !== "push") throw new HostsConfigError(`${where}: unknown capability ${JSON.stringify(c)}`);
    out.add(c);
  }
  return out;
}

function strList(v: unknown): string[] {
  if (v === undefined) return [];
  return Array.isArray(v) ? v.map(String) : [String(v)];
}

function headerTable(v: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (!v || typeof v !== "object") return out;
  for (const [k, x] of Object.entries(v as Record<string, unknown>)) out[k] = Array.isArray(x) ? x.map(String).join(", ") : String(x);
  return out;
}

/** The endpoints to try for `registry` (a reference's domain), in order. */
export function configureHosts(registry: string, opts: HostOptions = {}): RegistryHost[] {
  const base = opts.headers ?? {};
  const defaultHost = (): RegistryHost => {
    const host = registry === "docker.io" ? "registry-1.docker.io" : registry;
    const scheme = opts.defaultScheme === "http" || opts.defaultScheme === "https" ? opts.defaultScheme : isLocalhost(registry) ? "http" : "https";
    return { scheme, host, path: "/v2", capabilities: ALL, headers: { ...base }, skipVerify: isLocalhost(registry), caFiles: [] };
  };
  if (!opts.hostDir) return [defaultHost()];
  let file: string | undefined;
  for (const d of hostDirCandidates(opts.hostDir, registry)) {
    const f = path.join(d, "hosts.toml");
    if (fs.existsSync(f)) {
      file = f;
      break;
    }
  }
  if (!file) return [defaultHost()];
  let doc: Record<string, unknown>;
  try {
    doc = parseToml(fs.readFileSync(file, "utf8")) as Record<string, unknown>;
  } catch (e) {
    throw new HostsConfigError(`${file}: ${(e as Error).message}`);
  }
  const hosts: RegistryHost[] = [];
  const tables = (doc.host ?? {}) as Record<string, Record<string, unknown>>;
  for (const [u, t] of Object.entries(tables)) {
    const where = `${file}: host ${JSON.stringify(u)}`;
    const p = parseUrl(u, where);
    hosts.push({
      scheme: p.scheme,
      host: p.host,
      path: apiPath(p.path, t.override_path === true),
      capabilities: caps(t.capabilities, where),
      headers: { ...base, ...headerTable(doc.header), ...headerTable(t.header) },
      skipVerify: t.skip_verify === true,
      caFiles: strList(t.ca),
    });
  }
  if (typeof doc.server === "string" && doc.server) {
    const p = parseUrl(doc.server, `${file}: server`);
    hosts.push({
      scheme: p.scheme,
      host: p.host,
      path: apiPath(p.path, doc.override_path === true),
      capabilities: caps(doc.capabilities, `${file}: server`),
      headers: { ...base, ...headerTable(doc.header) },
      skipVerify: doc.skip_verify === true,
      caFiles: strList(doc.ca),
    });
  } else {
    const d = defaultHost();
    d.headers = { ...d.headers, ...headerTable(doc.header) };
    hosts.push(d);
  }
  return hosts;
}
