/**
 * What every Flotilla process's tiny main.ts calls: load config, build logger, metrics and tracer,
 * connect the event bus, start one gRPC server with health and this process's plugin list, let the
 * service register itself, then drain on SIGTERM/SIGINT.
 */
import { Status } from "../grpc/status";
import * as fs from "node:fs";
import type { Logger } from "pino";
import { configPathFromArgv, loadConfig, serviceRoot, serviceState, unixPath, validatePlugins, type Config, type ServiceName } from "../config";
import { NatsEventBus } from "../events";
import { Outbox } from "../outbox";
import { createLogger } from "../log";
import { Metrics } from "../metrics";
import { parseAll } from "../filters";
import { RpcServer } from "../grpc/server";
import { MessageBuffers } from "../grpc/wire";
import { ChannelPool } from "../grpc/client";
import { tlsFor } from "../grpc/tls";
import { initTracing, shutdownTracing } from "../tracing";
import { pluginAdaptor, pluginToProto } from "./plugins";
import { componentPlugins, uriOf, type Component, type ComponentStatus } from "./components";
import { notifyReady } from "./notify";
import { startIdleGc } from "./idle-gc";

export { GRPC_PLUGIN, hostPlatform, pluginAdaptor, pluginToProto, type Platform, type PluginInfo } from "./plugins";
export { component, componentPlugins, uriOf, type Component, type ComponentStatus, type ConfigOf } from "./components";
export { notifyReady } from "./notify";

export interface ServiceContext {
  name: ServiceName;
  config: Config;
  log: Logger;
  metrics: Metrics;
  server: RpcServer;
  events: NatsEventBus;
  /**
   * Where this process records the events of its changes (libs/outbox): `record` in the write
   * transaction of the change, `attach` each database it records into at open; `publish` for a change
   * with no database of its own. Its relay publishes them to JetStream.
   */
  outbox: Outbox;
  /** Persistent directory of this service (`<root>/<service>`), created. */
  root: string;
  /** Runtime directory of this service (`<state>/<service>`), created. */
  state: string;
  /**
   * Aborted when the process starts to stop (SIGTERM/SIGINT), before its servers drain: calls that would
   * otherwise stay open until the grace period ends (event subscriptions) end themselves on it.
   */
  stopping: AbortSignal;
  /** This process's gRPC channels to other processes: clients made with it share a connection per address. */
  channels: ChannelPool;
  /** This process's buffers for large incoming messages (its gRPC server reads into them; see MessageBuffers). */
  buffers: MessageBuffers;
  /** The checked `[plugins."<type>.<id>"]` table of one of this process's components (`{}` when absent). */
  configOf<C>(c: Component<C>): C;
}

export interface RunningService {
  /** What start made of each component, by `type.id` (exports, an init error, disabled); see componentPlugins. */
  status?: Record<string, ComponentStatus>;
  /** gRPC service names this process serves (reported SERVING by its health service). */
  grpcServices: string[];
  /**
   * A server that takes the public address instead of the gRPC server (the gateway's proxy); the gRPC
   * server then listens on an internal unix socket under the state directory, `internalAddress`.
   */
  frontend?: { listen(address: string): Promise<void>; close(graceMs: number): Promise<void> };
  close?(): Promise<void>;
}

/** Where a process with a frontend binds its own gRPC server. */
export function internalAddress(sc: Pick<ServiceContext, "state">): string {
  return `unix://${sc.state}/internal.sock`;
}

export interface ServiceDefinition {
  name: ServiceName;
  /** This process's components, in the order `ctr plugins ls` shows them. */
  components: readonly Component<unknown>[];
  start(sc: ServiceContext): Promise<RunningService>;
}

import { HEALTH_SERVICE } from "../clients/health";
import { INTROSPECTION_SERVICE } from "../clients/introspection";
export { HEALTH_SERVICE, INTROSPECTION_SERVICE };
const SERVING = 1;
const SERVICE_UNKNOWN = 3;

/** The NATS URL: config, else what the supervisor handed down. */
export function natsUrl(cfg: Config): string {
  return cfg.flotilla.nats.url || process.env.FLOTILLA_NATS_URL || "";
}

export function addHealth(server: RpcServer, servedNames: () => string[]): void {
  const status = (svc: string): number => (svc === "" || servedNames().includes(svc) ? SERVING : SERVICE_UNKNOWN);
  server.addService(HEALTH_SERVICE, {
    Check: async (_ctx, req) => {
      const s = status(String(req.service ?? ""));
      if (s === SERVICE_UNKNOWN) throw Object.assign(new Error("unknown service"), { code: Status.NOT_FOUND, details: `service ${JSON.stringify(req.service)}: not found` });
      return { status: s };
    },
    Watch: async (ctx, req, send) => {
      await send({ status: status(String(req.service ?? "")) });
      await new Promise<void>((resolve) => ctx.signal.addEventListener("abort", () => resolve(), { once: true }));
    },
  });
}

/**
 * Run a service process until SIGTERM/SIGINT. A main.ts calls it when it is the process's entry:
 * `require.main?.filename === __filename`, which holds in its build bundle too (there every module
 * shares the bundle's __filename, and `module` is the bundler's wrapper, not `require.main`).
 */
export async function runService(def: ServiceDefinition, argv: readonly string[] = process.argv.slice(2)): Promise<void> {
  let config: Config;
  try {
    config = loadConfig(configPathFromArgv(argv));
    validatePlugins(config, def.components);
  } catch (e) {
    process.stderr.write(`flotilla-${def.name}: ${(e as Error).message}\n`);
    process.exit(1);
  }
  const log = createLogger(def.name, config.debug.level);
  const metrics = new Metrics(def.name);
  initTracing(def.name, config.flotilla.otlp_endpoint, { protocol: config.flotilla.otlp_protocol });
  const svcCfg = config.flotilla.services[def.name];
  const root = serviceRoot(config, def.name);
  const state = serviceState(config, def.name);
  fs.mkdirSync(root, { recursive: true, mode: 0o711 });
  fs.mkdirSync(state, { recursive: true, mode: 0o711 });
  const events = new NatsEventBus({ url: natsUrl(config), client: config.flotilla.nats, prefix: config.flotilla.events_subject_prefix, log, name: `flotilla-${def.name}` });
  const ev = config.flotilla.events;
  const outbox = new Outbox({
    service: def.name, prefix: config.flotilla.events_subject_prefix, log, root, connection: () => events.connection(),
    stream: { maxAgeMs: ev.max_age, maxBytes: ev.max_bytes, replicas: ev.replicas },
    // Without NATS nothing would ever drain an outbox: events are dropped then, as before. (And the
    // benchmarks' baseline, events as before the outbox: see bench/events.ts.)
    direct: !natsUrl(config) || process.env.FLOTILLA_EVENTS_DIRECT === "1" ? events : undefined,
  });
  const buffers = new MessageBuffers();
  // With TLS configured, this process serves its TCP address with mutual TLS and its channels dial TCP peers with it.
  const tls = tlsFor(config, def.name);
  const channels = new ChannelPool(tls);
  // (The gateway's own gRPC server sits behind its front, on a unix socket.)
  const ownTls = unixPath(svcCfg.address) === undefined && def.name !== "gateway" ? tls : undefined;
  const server = new RpcServer({ service: def.name, log, metrics, maxMessage: config.grpc.max_recv_message_size, buffers, tls: ownTls });

  let running: RunningService | undefined;
  const stopping = new AbortController();
  const configOf = <C>(c: Component<C>): C => (c.config ? c.config.check(config.plugins[uriOf(c)] ?? {}, ["plugins", uriOf(c)]) : ({} as C));
  const sc: ServiceContext = { name: def.name, config, log, metrics, server, events, outbox, root, state, stopping: stopping.signal, channels, buffers, configOf };
  try {
    running = await def.start(sc);
  } catch (e) {
    log.fatal({ err: e }, "service failed to start");
    process.exit(1);
  }
  // A process that answers health itself (the gateway, from its owners) registered it in start().
  if (!server.has(`/${HEALTH_SERVICE}/Check`)) addHealth(server, () => running?.grpcServices ?? []);
  // Each process answers Introspection/Plugins for its own plugins; the gateway serves the merged view.
  if (!server.has(`/${INTROSPECTION_SERVICE}/Plugins`)) {
    const plugins = componentPlugins(def.components, running.status);
    server.addService(INTROSPECTION_SERVICE, {
      Plugins: async (_ctx, req) => {
        const f = parseAll(req.filters as string[]);
        return { plugins: plugins.map(pluginToProto).filter((p) => f.match(pluginAdaptor(p))) };
      },
    });
  }
  if (running.frontend) {
    await server.listen(internalAddress(sc));
    await running.frontend.listen(svcCfg.address);
  } else {
    await server.listen(svcCfg.address);
  }
  const metricsPort = await metrics.listen(svcCfg.metrics_address);
  if (metricsPort !== undefined) outbox.registerMetrics(metrics);
  outbox.start();
  // How long this process took to serve, from its own start (what `flotilla up` start-up is made of).
  const cpu = process.cpuUsage();
  log.info({ address: svcCfg.address, metrics: metricsPort, pid: process.pid, startupMs: Math.round(performance.now()), startupCpuMs: Math.round((cpu.user + cpu.system) / 1000) }, "serving");
  notifyReady(log);
  startIdleGc();

  const stop = async (signal: string): Promise<void> => {
    if (stopping.signal.aborted) return;
    stopping.abort();
    log.info({ signal }, "shutting down");
    const hard = setTimeout(() => process.exit(1), 10000);
    hard.unref();
    await running?.frontend?.close(5000);
    await server.shutdown(5000);
    await running?.close?.().catch((err: unknown) => log.error({ err }, "close failed"));
    await outbox.close();
    await events.close();
    await metrics.close();
    channels.close();
    await shutdownTracing();
    log.info("stopped");
    process.exit(0);
  };
  process.on("SIGTERM", () => void stop("SIGTERM"));
  process.on("SIGINT", () => void stop("SIGINT"));
}
