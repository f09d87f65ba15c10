/**
 * How a CRI pull reaches a registry, as containerd's CRI sets its resolver up: the hosts directory of
 * `[registry] config_path` (containerd's `<dir>/<host>/hosts.toml` mirrors; several roots may be given,
 * separated by ':', the first that has the host wins), or, without one, a hosts directory written
 * from the deprecated `[registry.mirrors]`; credentials from the request's AuthConfig, else from
 * `[registry.configs.<host>.auth]`.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type { RegistryCredentials } from "#libs/core/transfer";
import { errInvalidArgument } from "#libs/errdefs";
import type { CriConfig, RegistryAuth } from "../config";

/** The CRI's AuthConfig (runtime.v1.AuthConfig), as decoded. */
export interface CriAuth {
  username?: string;
  password?: string;
  auth?: string;
  server_address?: string;
  identity_token?: string;
  registry_token?: string;
}

/**
 * The credentials for `host` (containerd's ParseAuth): none when the auth names another server;
 * username and password; an identity token (an OAuth2 refresh token); `auth` (base64 `user:password`);
 * a registry token (a bearer token sent as it is).
 */
export function credentialsFor(auth: CriAuth | undefined | null, host: string): RegistryCredentials | undefined {
  if (!auth) return undefined;
  if (auth.server_address) {
    let server = auth.server_address;
    try {
      server = /^[a-z][a-z0-9+.-]*:\/\//i.test(server) ? new URL(server).host : server.replace(/\/.*$/, "");
    } catch {
      throw errInvalidArgument(`parse server address: ${JSON.stringify(auth.server_address)}`);
    }
    if (server !== host) return undefined;
  }
  if (auth.username) return { type: "credentials", username: auth.username, secret: auth.password ?? "" };
  if (auth.identity_token) return { type: "refresh", secret: auth.identity_token };
  if (auth.auth) {
    const decoded = Buffer.from(auth.auth, "base64").toString("utf8");
    const i = decoded.indexOf(":");
    if (i < 0) throw errInvalidArgument("invalid decoded auth: want base64 of user:password");
    return { type: "credentials", username: decoded.slice(0, i), secret: decoded.slice(i + 1).replace(/\0+$/, "") };
  }
  if (auth.registry_token) return { type: "header", secret: `Bearer ${auth.registry_token}` };
  return undefined;
}

const fromConfig = (a: RegistryAuth): CriAuth => ({ username: a.username, password: a.password, auth: a.auth, identity_token: a.identitytoken });

/** The credentials callback of one pull: the request's auth, else the configured one of the host asked for. */
export function credentialsCallback(cfg: CriConfig, auth: CriAuth | undefined | null): ((req: { host: string }) => Promise<RegistryCredentials | undefined>) | undefined {
  const given = auth && Object.values(auth).some(Boolean) ? auth : undefined;
  if (!given && Object.keys(cfg.registry.auths).length === 0) return undefined;
  return async ({ host }) => {
    const a = given ?? (cfg.registry.auths[host] ? fromConfig(cfg.registry.auths[host]!) : undefined);
    return credentialsFor(a, host);
  };
}

/** The hosts directory for a pull from `host`: the first root of `config_path` holding it (or `_default`), else the first root. */
export function hostDirFor(roots: readonly string[], host: string): string | undefined {
  for (const r of roots) {
    if (fs.existsSync(path.join(r, host, "hosts.toml")) || fs.existsSync(path.join(r, "_default", "hosts.toml"))) return r;
  }
  return roots[0];
}

const tomlString = (s: string): string => JSON.stringify(s);

/**
 * A hosts directory under `dir` equivalent to the deprecated `[registry.mirrors]` (each upstream
 * tried through its endpoints in order, the registry itself last when not listed), with the
 * deprecated `configs.<host>.tls` settings on the hosts they name. Undefined when no mirror is set.
 */
export function writeMirrorHosts(cfg: CriConfig, dir: string): string | undefined {
  const mirrors = Object.entries(cfg.registry.mirrors);
  if (!mirrors.length) return undefined;
  fs.rmSync(dir, { recursive: true, force: true });
  for (const [upstream, endpoints] of mirrors) {
    const lines: string[] = [];
    for (const e of endpoints) {
      const u = /^[a-z]+:\/\//.test(e) ? e : `https://${e}`;
      let host = u;
      try {
        host = new URL(u).host;
      } catch {
        throw errInvalidArgument(`parse registry endpoint ${JSON.stringify(e)} from mirrors`);
      }
      lines.push(`[host.${tomlString(u)}]`, '  capabilities = ["pull", "resolve"]');
      const tls = cfg.registry.tls[host];
      if (tls?.insecure_skip_verify) lines.push("  skip_verify = true");
      if (tls?.ca_file) lines.push(`  ca = ${tomlString(tls.ca_file)}`);
    }
    const name = upstream === "*" ? "_default" : upstream;
    fs.mkdirSync(path.join(dir, name), { recursive: true, mode: 0o700 });
    fs.writeFileSync(path.join(dir, name, "hosts.toml"), lines.join("\n") + "\n", { mode: 0o600 });
  }
  return dir;
}
