/**
 * The tasks process: containerd.services.containers.v1.Containers (records in LMDB) and
 * containerd.services.tasks.v1.Tasks (the runtime v2 manager driving shims), plus the ttrpc events
 * socket shims forward their task events to (`<gateway socket>.ttrpc`), which go out on NATS.
 */
import * as path from "node:path";
import { runService, uriOf, type ComponentStatus, type ServiceDefinition } from "#libs/service";
import { dialAddress, unixPath } from "#libs/config";
import { NamespaceEnsurer, NamespaceStoreProxy } from "#libs/clients/namespaces";
import { ContentStoreProxy } from "#libs/clients/content";
import { repoRoot, unpackAny } from "#libs/proto";
import { TtrpcServer } from "#libs/ttrpc";
import { typedService } from "#libs/ttrpc/typed";
import type { Envelope } from "#libs/events";
import { background } from "#libs/context";
import { LocalContainerStore, openTasksDB } from "./src/local/containers";
import { LocalTaskService } from "./src/local/tasks";
import { ShimManager } from "./src/runtime/manager";
import { ForwardedDeletes } from "./src/runtime/forwarded";
import { TASK_EVENTS } from "#libs/core/tasks";
import { WarmPool } from "./src/runtime/warm";
import { registerContainerMetrics } from "./src/metrics";
import { extractFromHeaders, metadataCarrier, tracingEnv } from "#libs/tracing";
import { RuntimeResolver, runtimesConfig } from "./src/runtime/runtimes";
import { RUNTIME_SHIM, RUNTIME_TASK, TASKS_COMPONENTS, CONTAINERS_METADATA, TTRPC_EVENTS } from "./components";
import { CONTAINERS_SERVICE, containersHandlers } from "./src/server/containers";
import { TASKS_SERVICE, tasksHandlers } from "./src/server/tasks";

const TTRPC_EVENTS_SERVICE = "containerd.services.events.ttrpc.v1.Events";

/** Where shims forward events: `<gateway unix socket>.ttrpc` (containerd's convention), else under our state. */
export function ttrpcAddressFor(grpcAddress: string, state: string, configured?: string): string {
  if (configured) return configured;
  const p = unixPath(grpcAddress);
  return p ? `${p}.ttrpc` : path.join(state, "events.ttrpc");
}

export const tasksService: ServiceDefinition = {
  name: "tasks",
  components: TASKS_COMPONENTS,
  async start(sc) {
    // Shims (started from here, warm or not, with this environment) export their spans where we do.
    Object.assign(process.env, tracingEnv(sc.config.flotilla.otlp_endpoint, sc.config.flotilla.otlp_protocol));
    const rawCfg = sc.configOf(RUNTIME_TASK);
    const cfg = runtimesConfig(rawCfg, sc.state);
    const ttrpcAddress = ttrpcAddressFor(sc.config.grpc.address, sc.state, rawCfg.ttrpc_address);

    // Events from shims: validated and recorded in the outbox as-is; the shim hears back once recorded.
    const forwardedDeletes = new ForwardedDeletes();
    const ttrpc = new TtrpcServer({ onError: (err, where) => sc.log.error({ err, where }, "ttrpc request failed") });
    ttrpc.register(TTRPC_EVENTS_SERVICE, typedService(TTRPC_EVENTS_SERVICE, {
      Forward: async (ctx, req) => {
        const env = req.envelope as Envelope;
        // The event carries the trace of the call that caused it, which the shim sends as `traceparent`.
        await sc.outbox.forward({ ...background(ctx.namespace), trace: extractFromHeaders(metadataCarrier(ctx.metadata)) }, env);
        if (env?.topic === TASK_EVENTS.delete.topic) {
          try {
            forwardedDeletes.seen(env.namespace, String(unpackAny<{ container_id?: string }>(env.event).container_id ?? ""));
          } catch {
            /* not a TaskDelete: nobody waits for it */
          }
        }
        return {};
      },
    }));
    await ttrpc.listen(ttrpcAddress);

    const db = openTasksDB(sc.root);
    sc.outbox.attach(db);
    const ensurer = new NamespaceEnsurer(new NamespaceStoreProxy(sc.channels.get(dialAddress(sc.config, "images"))), sc.events);
    const containers = new LocalContainerStore(db, sc.outbox, { ensureNamespace: (ctx, ns) => ensurer.ensure(ctx, ns) });
    const dirs = { state: path.join(sc.state, "io.containerd.runtime.v2.task"), root: path.join(sc.root, "io.containerd.runtime.v2.task") };
    const resolver = new RuntimeResolver(cfg);
    const debug = sc.config.debug.level === "debug" || sc.config.debug.level === "trace";
    const publishBinary = path.join(repoRoot(), "bin", "flotilla");
    const warm = new WarmPool({
      size: cfg.warmShims,
      socketDir: cfg.socketDir,
      env: { TTRPC_ADDRESS: ttrpcAddress, GRPC_ADDRESS: sc.config.grpc.address, MAX_SHIM_VERSION: "3" },
      address: sc.config.grpc.address,
      publishBinary,
      debug,
      log: sc.log,
    });
    const manager = new ShimManager({
      dirs,
      resolver,
      address: sc.config.grpc.address,
      ttrpcAddress,
      publishBinary,
      debug,
      warm,
      shimGroupSize: cfg.shimGroupSize,
      events: sc.outbox,
      forwardedDeletes,
      log: sc.log,
      runtimeOf: async (ns, id) => (await containers.get(background(ns), id).catch(() => undefined))?.runtime.name,
    });
    const recovered = await manager.loadExisting();
    if (recovered.loaded || recovered.cleaned) sc.log.info(recovered, "reconnected to running shims");
    const tasks = new LocalTaskService(containers, manager, {
      checkpointDir: path.join(sc.state, "checkpoints"),
      content: new ContentStoreProxy(sc.channels.get(dialAddress(sc.config, "content"))),
    });
    try {
      warm.fill(resolver.resolve("io.containerd.runc.v2"));
    } catch (err) {
      sc.log.warn({ err }, "no warm shims for io.containerd.runc.v2");
    }

    // container_* cgroup metrics of every running task (containerd's /v1/metrics families).
    registerContainerMetrics(sc.metrics.registry, {
      tasks: async () =>
        containers.namespaces().flatMap((ns) =>
          manager.list(ns).map((t) => ({ namespace: ns, id: t.id, pid: async () => Number((await t.call("State", {}, 2000)).pid ?? 0) })),
        ),
    });

    sc.server.addService(CONTAINERS_SERVICE, containersHandlers(containers));
    sc.server.addService(TASKS_SERVICE, tasksHandlers(tasks));

    const status: Record<string, ComponentStatus> = {
      [uriOf(CONTAINERS_METADATA)]: { exports: { path: path.join(sc.root, "meta.lmdb") } },
      [uriOf(RUNTIME_SHIM)]: { exports: { root: dirs.root, state: dirs.state } },
      [uriOf(TTRPC_EVENTS)]: { exports: { address: ttrpcAddress } },
    };
    return {
      grpcServices: [CONTAINERS_SERVICE, TASKS_SERVICE],
      status,
      close: async () => {
        manager.close();
        ensurer.close();
        await ttrpc.close();
        await db.close();
      },
    };
  },
};

if (require.main?.filename === __filename) void runService(tasksService);
