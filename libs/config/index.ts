/**
 * containerd-style TOML configuration (smol-toml), shared by every Flotilla process.
 *
 *   version = 2
 *   root = "/var/lib/flotilla"
 *   state = "/run/flotilla"
 *   [grpc]     address = "/run/flotilla/flotilla.sock"   # the gateway's containerd API socket
 *   [metrics]  address = "127.0.0.1:1338"                 # the gateway's /metrics ("" = off)
 *   [debug]    level = "info"
 *   [plugins."io.containerd.snapshotter.v1.overlayfs"] ...
 *   [flotilla]
 *     nats_url = ""                       # older spelling of [flotilla.nats] url
 *     events_subject_prefix = "flotilla.events"
 *     otlp_endpoint = ""                  # e.g. http://127.0.0.1:4318/v1/traces
 *     otlp_protocol = "http/protobuf"     # or "http/json"
 *     gateway_content_reads = true        # the gateway reads blobs the content process let it (same host)
 *     gateway_read_views = true           # the gateway answers lookups from the owners' databases (same host)
 *   [flotilla.events]                     # the JetStream stream of every event (libs/outbox)
 *     max_age = "168h"  max_bytes = 1073741824  replicas = 1
 *   [flotilla.services.content]
 *     address = "unix:///run/flotilla/content.sock"   # or tcp://0.0.0.0:7001
 *     metrics_address = "127.0.0.1:9601"
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { parse as parseToml } from "smol-toml";
import { causeText, errInvalidArgument, type FlotillaError } from "../errdefs";
import { configError, schema, type Infer, type Schema } from "./schema";

export { schema, configError, parseDuration, type Infer, type Schema } from "./schema";

export const SERVICE_NAMES = ["content", "snapshots", "images", "tasks", "transfer", "sandbox", "cri", "gateway"] as const;
export type ServiceName = (typeof SERVICE_NAMES)[number];

export interface ServiceConfig {
  /** gRPC listen address: `unix:///path`, `unix:/path`, a bare absolute path, `tcp://host:port` or `host:port`. */
  address: string;
  /** host:port for /metrics, "" disables. */
  metrics_address: string;
  // Across hosts (mutual TLS, advertised addresses); "" = unset.
  /** This process's certificate and key (PEM files): with `[flotilla.tls] ca`, a TCP `address` serves mutual TLS and peers are dialled with TLS. */
  tls_cert: string;
  tls_key: string;
  /** Where peers dial this process; "" = `address`, an unspecified host (0.0.0.0, [::]) read as 127.0.0.1 (see dialAddress). */
  advertise_address: string;
}

/** `[flotilla.tls]`: the CA every process verifies its peers against, and the certificate `flotilla` commands dial with. */
export interface TlsConfig {
  ca: string;
  cert: string;
  key: string;
}

export interface NatsConfig {
  /** nats:// URL of an existing server, several comma-separated for a cluster; "" lets `flotilla up` start one. */
  url: string;
  // Credentials (at most one kind) and TLS for the server at `url`; "" = unset.
  user: string;
  password: string;
  token: string;
  /** A file holding an nkey seed (`SU...`). */
  nkey_seed_file: string;
  /** A `.creds` file (user JWT and nkey seed), as `nsc` writes it. */
  creds_file: string;
  /** The CA that signed the server's certificate; with tls_cert and tls_key, the client certificate too. */
  tls_ca: string;
  tls_cert: string;
  tls_key: string;
  /** Port for the embedded server `flotilla up` starts (0 picks a free one). */
  embedded_port: number;
  /** Where the embedded server listens (default 127.0.0.1). */
  embedded_address: string;
  /** The embedded server's JetStream store ("" = <root>/nats). */
  embedded_store_dir: string;
}

/** `[flotilla.events]`: the JetStream stream every event goes to (see libs/outbox). */
export interface EventsConfig {
  /** How long the stream keeps an event, in milliseconds (0: no limit); a Go duration in the file ("168h"). */
  max_age: number;
  /** Bytes the stream keeps before it drops the oldest (-1: no limit). */
  max_bytes: number;
  /** Copies of the stream in a NATS cluster. */
  replicas: number;
}

export interface Config {
  version: number;
  root: string;
  state: string;
  grpc: {
    address: string; max_recv_message_size: number; max_send_message_size: number;
    /** containerd's extra TCP listener of the gateway (the unix socket stays); with the three tcp_tls_* files it serves mutual TLS. */
    tcp_address: string; tcp_tls_ca: string; tcp_tls_cert: string; tcp_tls_key: string;
  };
  metrics: { address: string };
  debug: { level: string };
  plugins: Record<string, Record<string, unknown>>;
  disabled_plugins: string[];
  flotilla: {
    nats: NatsConfig;
    events_subject_prefix: string;
    events: EventsConfig;
    otlp_endpoint: string;
    /** How spans are sent to `otlp_endpoint`: "http/protobuf" (OTEL's default) or "http/json". */
    otlp_protocol: OtlpProtocol;
    /** The gateway serves content Read from the content process's blob files (same host only). */
    gateway_content_reads: boolean;
    /** The gateway answers Content.Info and the Get lookups from read-only views of the owners' databases (same host only). */
    gateway_read_views: boolean;
    services: Record<ServiceName, ServiceConfig>;
    tls: TlsConfig;
  };
  /** Where the config was read from, if a file. */
  source?: string;
}

const MiB = 1024 * 1024;

export const OTLP_PROTOCOLS = ["http/protobuf", "http/json"] as const;
export type OtlpProtocol = (typeof OTLP_PROTOCOLS)[number];

const str = schema.string;
const int = schema.int;
const strings = schema.strings;

/** One process's `[flotilla.services.<name>]`. */
const SERVICE_TABLE = schema.table({ address: str(), metrics_address: str(), tls_cert: str(), tls_key: str(), advertise_address: str() });

/** `[flotilla.nats]`: the server (or cluster) every process publishes to, or the embedded one's settings. */
const NATS_TABLE = schema.table({
  url: schema.stringOrList(), user: str(), password: str(), token: str(), nkey_seed_file: str(), creds_file: str(),
  tls_ca: str(), tls_cert: str(), tls_key: str(),
  embedded_port: int({ min: 0, max: 65535 }), embedded_address: str(), embedded_store_dir: str(),
});

/**
 * The top level: containerd's keys (every one of them, so that a containerd config works as it is;
 * those Flotilla does not use are accepted and ignored, as containerd ignores what it does not know
 * inside a plugin table) and the `[flotilla]` table. Plugin tables are checked against the schemas of
 * the components that read them (validatePlugins).
 */
export const CONFIG_SCHEMA = schema.table({
  version: int(),
  root: str(),
  state: str(),
  temp: str(),
  plugin_dir: str(),
  grpc: schema.table({
    address: str(), tcp_address: str(), tcp_tls_ca: str(), tcp_tls_cert: str(), tcp_tls_key: str(),
    uid: int(), gid: int(), max_recv_message_size: int({ min: 1 }), max_send_message_size: int({ min: 1 }),
  }),
  ttrpc: schema.table({ address: str(), uid: int(), gid: int() }),
  debug: schema.table({ address: str(), uid: int(), gid: int(), level: str(), format: str() }),
  metrics: schema.table({ address: str(), grpc_histogram: schema.bool() }),
  disabled_plugins: strings(),
  required_plugins: strings(),
  plugins: schema.map(schema.map({ expected: "any value", check: (v) => v })),
  oom_score: int(),
  cgroup: schema.table({ path: str() }),
  proxy_plugins: schema.map(schema.table({ type: str(), address: str(), platform: str() })),
  timeouts: schema.map(str()),
  imports: strings(),
  stream_processors: schema.map(schema.table({ accepts: strings(), returns: str(), path: str(), args: strings(), env: strings() })),
  flotilla: schema.table({
    /** Older spelling of [flotilla.nats] url. */
    nats_url: str(),
    nats: NATS_TABLE,
    events_subject_prefix: str(),
    events: schema.table({ max_age: schema.duration(), max_bytes: int({ min: -1 }), replicas: int({ min: 1, max: 5 }) }),
    otlp_endpoint: str(),
    otlp_protocol: schema.oneOf(OTLP_PROTOCOLS),
    gateway_content_reads: schema.bool(),
    gateway_read_views: schema.bool(),
    services: schema.table(Object.fromEntries(SERVICE_NAMES.map((n) => [n, SERVICE_TABLE])) as Record<ServiceName, typeof SERVICE_TABLE>),
    tls: schema.table({ ca: str(), cert: str(), key: str() }),
  }),
});

/** A config file's error: `config <file>: <what>`, with what the schema said. */
function inFile(source: string | undefined, err: unknown): FlotillaError {
  return errInvalidArgument(`config${source ? ` ${source}` : ""}: ${causeText(err)}`, { cause: err });
}

/** `[flotilla.nats]` with its defaults; more than one kind of credentials is an error. */
function natsConfig(t: Infer<typeof NATS_TABLE> | undefined, oldUrl: string | undefined, root: string, source?: string): NatsConfig {
  const n = t ?? {};
  const kinds = [n.user || n.password ? "user/password" : "", n.token ? "token" : "", n.nkey_seed_file ? "nkey_seed_file" : "", n.creds_file ? "creds_file" : ""].filter(Boolean);
  if (kinds.length > 1) throw inFile(source, configError(["flotilla", "nats"], `one kind of credentials at most (got ${kinds.join(", ")})`));
  if ((n.tls_cert ? 1 : 0) + (n.tls_key ? 1 : 0) === 1) throw inFile(source, configError(["flotilla", "nats"], "tls_cert and tls_key go together"));
  return {
    url: (n.url ?? [oldUrl ?? ""]).map((u) => u.trim()).filter(Boolean).join(","),
    user: n.user ?? "", password: n.password ?? "", token: n.token ?? "", nkey_seed_file: n.nkey_seed_file ?? "", creds_file: n.creds_file ?? "",
    tls_ca: n.tls_ca ?? "", tls_cert: n.tls_cert ?? "", tls_key: n.tls_key ?? "",
    embedded_port: n.embedded_port ?? 0, embedded_address: n.embedded_address || "127.0.0.1",
    embedded_store_dir: n.embedded_store_dir || path.join(root, "nats"),
  };
}

/** Build a full config from a parsed TOML document, filling defaults (a key of a wrong type or unknown is an error). */
export function fromToml(raw: Record<string, unknown>, source?: string): Config {
  let doc: Infer<typeof CONFIG_SCHEMA>;
  try {
    doc = CONFIG_SCHEMA.check(raw, []);
    // A version 1 file (containerd's `[plugins.cri]`, ...) is not read at all.
    if (doc.version !== undefined && doc.version !== 2 && doc.version !== 3) throw configError(["version"], `unsupported version ${doc.version}`);
    for (const key of Object.keys(doc.plugins ?? {})) {
      if (key.split(".").length < 4) throw configError(["plugins", key], "not a plugin URI (io.containerd.<type>.<version>.<id>)");
    }
  } catch (e) {
    throw inFile(source, e);
  }
  const version = doc.version ?? 2;
  const root = doc.root ?? "/var/lib/flotilla";
  const state = doc.state ?? "/run/flotilla";
  const fl = doc.flotilla ?? {};
  const services = {} as Record<ServiceName, ServiceConfig>;
  for (const name of SERVICE_NAMES) {
    const s = fl.services?.[name];
    const dfltAddr = name === "gateway" ? "" : `unix://${path.join(state, `${name}.sock`)}`;
    services[name] = {
      address: s?.address ?? dfltAddr, metrics_address: s?.metrics_address ?? "",
      tls_cert: s?.tls_cert ?? "", tls_key: s?.tls_key ?? "", advertise_address: s?.advertise_address ?? "",
    };
  }
  const grpcAddress = doc.grpc?.address ?? path.join(state, "flotilla.sock");
  services.gateway.address = grpcAddress;
  if (!services.gateway.metrics_address) services.gateway.metrics_address = doc.metrics?.address ?? "";
  const env = process.env;
  const otlpProtocol = fl.otlp_protocol ?? (env.OTEL_EXPORTER_OTLP_TRACES_PROTOCOL || env.OTEL_EXPORTER_OTLP_PROTOCOL || "http/protobuf");
  if (!(OTLP_PROTOCOLS as readonly string[]).includes(otlpProtocol)) {
    throw errInvalidArgument(`OTEL_EXPORTER_OTLP_PROTOCOL ${JSON.stringify(otlpProtocol)}: must be one of ${OTLP_PROTOCOLS.join(", ")}`);
  }
  return {
    version,
    root,
    state,
    grpc: {
      address: grpcAddress,
      max_recv_message_size: doc.grpc?.max_recv_message_size ?? 16 * MiB,
      max_send_message_size: doc.grpc?.max_send_message_size ?? 16 * MiB,
      tcp_address: doc.grpc?.tcp_address ?? "", tcp_tls_ca: doc.grpc?.tcp_tls_ca ?? "",
      tcp_tls_cert: doc.grpc?.tcp_tls_cert ?? "", tcp_tls_key: doc.grpc?.tcp_tls_key ?? "",
    },
    metrics: { address: doc.metrics?.address ?? "" },
    debug: { level: doc.debug?.level ?? "info" },
    plugins: (doc.plugins ?? {}) as Record<string, Record<string, unknown>>,
    disabled_plugins: doc.disabled_plugins ?? [],
    flotilla: {
      nats: natsConfig(fl.nats, fl.nats_url, root, source),
      events_subject_prefix: fl.events_subject_prefix ?? "flotilla.events",
      events: { max_age: fl.events?.max_age ?? 7 * 24 * 3_600_000, max_bytes: fl.events?.max_bytes ?? 1024 * MiB, replicas: fl.events?.replicas ?? 1 },
      otlp_endpoint: fl.otlp_endpoint ?? env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT ?? "",
      otlp_protocol: otlpProtocol as OtlpProtocol,
      gateway_content_reads: fl.gateway_content_reads ?? true,
      gateway_read_views: fl.gateway_read_views ?? true,
      services,
      tls: { ca: fl.tls?.ca ?? "", cert: fl.tls?.cert ?? "", key: fl.tls?.key ?? "" },
    },
    source,
  };
}

export function loadConfig(file?: string): Config {
  if (!file) return fromToml({});
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (e) {
    throw errInvalidArgument(`config ${file}: ${(e as Error).message}`);
  }
  let doc: Record<string, unknown>;
  try {
    doc = parseToml(text) as Record<string, unknown>;
  } catch (e) {
    throw errInvalidArgument(`config ${file}: ${(e as Error).message}`);
  }
  return fromToml(doc, path.resolve(file));
}

/** A plugin as the config knows it: `[plugins."<type>.<id>"]`, read against `config` when it has one. */
export interface PluginConfigDecl {
  type: string;
  id: string;
  /** The plugin's table; absent: the plugin takes no configuration (any key in its table is an error). */
  config?: Schema<unknown>;
}

/** No configuration: an empty table is all a plugin without a schema accepts. */
const NO_CONFIG = schema.table({});

/**
 * Check the plugin tables of `plugins` (each against its schema; an error names the key). Returns the
 * tables of the config that none of them implements (containerd's CRI tables, ...), which are ignored.
 */
export function validatePlugins(cfg: Config, plugins: readonly PluginConfigDecl[]): string[] {
  const known = new Set<string>();
  for (const p of plugins) {
    const uri = `${p.type}.${p.id}`;
    known.add(uri);
    const t = cfg.plugins[uri];
    if (t === undefined) continue;
    try {
      (p.config ?? NO_CONFIG).check(t, ["plugins", uri]);
    } catch (e) {
      throw inFile(cfg.source, e);
    }
  }
  return Object.keys(cfg.plugins).filter((k) => !known.has(k));
}

/** Per-service directory under `root` (persistent) and `state` (runtime). */
export function serviceRoot(cfg: Config, svc: ServiceName): string {
  return path.join(cfg.root, svc);
}
export function serviceState(cfg: Config, svc: ServiceName): string {
  return path.join(cfg.state, svc);
}

/** The config of one plugin, `[plugins."<type>.<id>"]`. */
export function pluginConfig(cfg: Config, type: string, id: string): Record<string, unknown> {
  return cfg.plugins[`${type}.${id}`] ?? {};
}

/** Parse `--config FILE` (or `-c FILE`) out of argv. */
export function configPathFromArgv(argv: readonly string[]): string | undefined {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--config" || a === "-c") return argv[i + 1];
    if (a.startsWith("--config=")) return a.slice("--config=".length);
  }
  return process.env.FLOTILLA_CONFIG || undefined;
}

/** Normalise a listen/dial address to grpc-js form: `unix:///abs` or `host:port`. */
export function grpcTarget(address: string): string {
  if (address.startsWith("unix://")) return address;
  if (address.startsWith("unix:")) return "unix://" + address.slice(5);
  if (address.startsWith("/")) return "unix://" + address;
  if (address.startsWith("tcp://")) return address.slice(6);
  return address;
}

/**
 * True when `address` is on this host: a unix socket, or TCP on a loopback or unspecified address
 * (connecting to 0.0.0.0 reaches this host). A process behind any other address may run elsewhere,
 * and files under its root here would not be its own.
 */
export function onThisHost(address: string): boolean {
  if (unixPath(address) !== undefined) return true;
  const host = grpcTarget(address).replace(/:\d+$/, "");
  return host === "localhost" || host === "[::1]" || host === "[::]" || host === "0.0.0.0" || host.startsWith("127.");
}

/**
 * The address peers dial to reach `svc`: its `advertise_address`, else its listen address with an
 * unspecified host (0.0.0.0, [::], none) replaced by 127.0.0.1, which reaches a listener on every
 * interface from this host. Every process resolves a peer's address here, never from `address`.
 */
export function dialAddress(cfg: Config, svc: ServiceName): string {
  const s = cfg.flotilla.services[svc];
  if (s.advertise_address) return s.advertise_address;
  if (unixPath(s.address) !== undefined) return s.address;
  const t = grpcTarget(s.address);
  const i = t.lastIndexOf(":");
  const host = t.slice(0, i);
  return host === "" || host === "0.0.0.0" || host === "[::]" || host === "::" ? `127.0.0.1:${t.slice(i + 1)}` : t;
}

/** The filesystem path of a unix address, or undefined for TCP. */
export function unixPath(address: string): string | undefined {
  const t = grpcTarget(address);
  return t.startsWith("unix://") ? t.slice("unix://".length) : undefined;
}
