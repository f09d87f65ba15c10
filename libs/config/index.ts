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
 *     nats_url = ""                       # "" = `flotilla up` starts its own nats-server
 *     events_subject_prefix = "flotilla.events"
 *     otlp_endpoint = ""                  # e.g. http://127.0.0.1:4318/v1/traces
 *     otlp_protocol = "http/protobuf"     # or "http/json"
 *     gateway_content_reads = true        # the gateway reads blobs the content process let it (same host)
 *     gateway_read_views = true           # the gateway answers lookups from the owners' databases (same host)
 *   [flotilla.services.content]
 *     address = "unix:///run/flotilla/content.sock"   # or tcp://0.0.0.0:7001
 *     metrics_address = "127.0.0.1:9601"
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { parse as parseToml } from "smol-toml";
import { errInvalidArgument } from "../errdefs";

export const SERVICE_NAMES = ["content", "snapshots", "images", "tasks", "transfer", "sandbox", "gateway"] as const;
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
  /** nats:// URL of an existing server; "" lets `flotilla up` start one. */
  url: string;
  /** Port for the embedded server `flotilla up` starts (0 picks a free one). */
  embedded_port: number;
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

function otlpProtocol(v: string): OtlpProtocol {
  if (!(OTLP_PROTOCOLS as readonly string[]).includes(v)) throw errInvalidArgument(`[flotilla] otlp_protocol ${JSON.stringify(v)}: must be one of ${OTLP_PROTOCOLS.join(", ")}`);
  return v as OtlpProtocol;
}

type Table = Record<string, unknown>;
const isTable = (v: unknown): v is Table => !!v && typeof v === "object" && !Array.isArray(v) && !(v instanceof Date);

function str(t: Table | undefined, key: string, dflt: string): string {
  const v = t?.[key];
  if (v === undefined) return dflt;
  if (typeof v !== "string") throw errInvalidArgument(`config: ${key} must be a string`);
  return v;
}
function num(t: Table | undefined, key: string, dflt: number): number {
  const v = t?.[key];
  if (v === undefined) return dflt;
  if (typeof v === "bigint") return Number(v);
  if (typeof v !== "number") throw errInvalidArgument(`config: ${key} must be a number`);
  return v;
}
function table(t: Table | undefined, key: string): Table | undefined {
  const v = t?.[key];
  if (v === undefined) return undefined;
  if (!isTable(v)) throw errInvalidArgument(`config: [${key}] must be a table`);
  return v;
}

/** Build a full config from a parsed TOML document, filling defaults. */
export function fromToml(doc: Table, source?: string): Config {
  const version = num(doc, "version", 2);
  if (version !== 2 && version !== 3) throw errInvalidArgument(`config: unsupported version ${version}`);
  const root = str(doc, "root", "/var/lib/flotilla");
  const state = str(doc, "state", "/run/flotilla");
  const grpc = table(doc, "grpc");
  const metrics = table(doc, "metrics");
  const debug = table(doc, "debug");
  const plugins = table(doc, "plugins") ?? {};
  const fl = table(doc, "flotilla");
  const nats = table(fl, "nats");
  const svcs = table(fl, "services");
  const services = {} as Record<ServiceName, ServiceConfig>;
  for (const name of SERVICE_NAMES) {
    const s = table(svcs, name);
    const dfltAddr = name === "gateway" ? "" : `unix://${path.join(state, `${name}.sock`)}`;
    services[name] = {
      address: str(s, "address", dfltAddr), metrics_address: str(s, "metrics_address", ""),
      tls_cert: str(s, "tls_cert", ""), tls_key: str(s, "tls_key", ""), advertise_address: str(s, "advertise_address", ""),
    };
  }
  const grpcAddress = str(grpc, "address", path.join(state, "flotilla.sock"));
  services.gateway.address = grpcAddress;
  if (!services.gateway.metrics_address) services.gateway.metrics_address = str(metrics, "address", "");
  const disabled = doc["disabled_plugins"];
  return {
    version,
    root,
    state,
    grpc: {
      address: grpcAddress,
      max_recv_message_size: num(grpc, "max_recv_message_size", 16 * MiB),
      max_send_message_size: num(grpc, "max_send_message_size", 16 * MiB),
      tcp_address: str(grpc, "tcp_address", ""), tcp_tls_ca: str(grpc, "tcp_tls_ca", ""),
      tcp_tls_cert: str(grpc, "tcp_tls_cert", ""), tcp_tls_key: str(grpc, "tcp_tls_key", ""),
    },
    metrics: { address: str(metrics, "address", "") },
    debug: { level: str(debug, "level", "info") },
    plugins: Object.fromEntries(Object.entries(plugins).filter(([, v]) => isTable(v))) as Record<string, Record<string, unknown>>,
    disabled_plugins: Array.isArray(disabled) ? disabled.map(String) : [],
    flotilla: {
      nats: { url: str(nats, "url", str(fl, "nats_url", "")), embedded_port: num(nats, "embedded_port", 0) },
      events_subject_prefix: str(fl, "events_subject_prefix", "flotilla.events"),
      otlp_endpoint: str(fl, "otlp_endpoint", process.env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT ?? ""),
      otlp_protocol: otlpProtocol(str(fl, "otlp_protocol", process.env.OTEL_EXPORTER_OTLP_TRACES_PROTOCOL || process.env.OTEL_EXPORTER_OTLP_PROTOCOL || "http/protobuf")),
      gateway_content_reads: fl?.gateway_content_reads === undefined ? true : Boolean(fl.gateway_content_reads),
      gateway_read_views: fl?.gateway_read_views === undefined ? true : Boolean(fl.gateway_read_views),
      services,
      tls: { ca: str(table(fl, "tls"), "ca", ""), cert: str(table(fl, "tls"), "cert", ""), key: str(table(fl, "tls"), "key", "") },
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
  let doc: Table;
  try {
    doc = parseToml(text) as Table;
  } catch (e) {
    throw errInvalidArgument(`config ${file}: ${(e as Error).message}`);
  }
  return fromToml(doc, path.resolve(file));
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
