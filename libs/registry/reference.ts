/** Image references (`[domain/]path[:tag][@digest]`), with Docker's normalisation. */

export interface Reference {
  /** Registry host, with port if any (`docker.io`, `127.0.0.1:5000`). */
  domain: string;
  /** Repository path (`library/busybox`). */
  path: string;
  tag?: string;
  digest?: string;
}

export class ReferenceError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ReferenceError";
  }
}

const PATH_COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG = /^[\w][\w.-]{0,127}$/;
const DIGEST = /^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;
const DOMAIN = /^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?$/;

/** Split a reference as-is; the domain must be present (as containerd's reference.Parse). */
export function parseReference(s: string): Reference {
  if (!s) throw new ReferenceError("empty reference");
  let rest = s;
  let digest: string | undefined;
  const at = rest.indexOf("@");
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST.test(digest)) throw new ReferenceError(`invalid digest in reference ${JSON.stringify(s)}`);
  }
  let tag: string | undefined;
  const colon = rest.lastIndexOf(":");
  if (colon > rest.lastIndexOf("/")) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG.test(tag)) throw new ReferenceError(`invalid tag in reference ${JSON.stringify(s)}`);
  }
  const slash = rest.indexOf("/");
  if (slash <= 0) throw new ReferenceError(`reference ${JSON.stringify(s)}: object required`);
  const domain = rest.slice(0, slash);
  const path = rest.slice(slash + 1);
  if (!DOMAIN.test(domain)) throw new ReferenceError(`invalid domain in reference ${JSON.stringify(s)}`);
  if (!path || !path.split("/").every((c) => PATH_COMPONENT.test(c))) throw new ReferenceError(`invalid repository path in reference ${JSON.stringify(s)}`);
  return { domain, path, ...(tag ? { tag } : {}), ...(digest ? { digest } : {}) };
}

/** Docker's ParseNormalizedNamed + TagNameOnly: `busybox` -> `docker.io/library/busybox:latest`. */
export function normalizeReference(s: string): Reference {
  let name = s;
  const first = name.split("/")[0]!;
  const hasDomain = name.includes("/") && (first.includes(".") || first.includes(":") || first === "localhost" || first.startsWith("["));
  if (!hasDomain) {
    name = name.includes("/") ? `docker.io/${name}` : `docker.io/library/${name}`;
  } else if (first === "index.docker.io") {
    name = "docker.io" + name.slice(first.length);
  }
  const r = parseReference(name);
  if (r.domain === "docker.io" && !r.path.includes("/")) r.path = `library/${r.path}`;
  if (!r.tag && !r.digest) r.tag = "latest";
  return r;
}

export function formatReference(r: Reference): string {
  return `${r.domain}/${r.path}${r.tag ? `:${r.tag}` : ""}${r.digest ? `@${r.digest}` : ""}`;
}

/** `domain/path` without tag or digest. */
export function locator(r: Reference): string {
  return `${r.domain}/${r.path}`;
}

/** The object to ask the registry for: the digest when present, else the tag. */
export function objectOf(r: Reference): string {
  return r.digest ?? r.tag ?? "latest";
}

/** True for `localhost`, `127.x.x.x` and `::1`, with or without a port. */
export function isLocalhost(host: string): boolean {
  let h = host;
  if (h.startsWith("[")) h = h.slice(1, h.indexOf("]"));
  else if (h.includes(":") && h.split(":").length === 2) h = h.split(":")[0]!;
  return h === "localhost" || /^127\.\d+\.\d+\.\d+$/.test(h) || h === "::1";
}
