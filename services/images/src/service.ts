/**
 * The images process's wiring: namespaces, images and leases in LMDB, their gRPC adapters, and the
 * garbage collector (collector, scheduler, metrics, the events that wake it) across every process that
 * holds data.
 */
import * as path from "node:path";
import { dialAddress } from "#libs/config";
import { uriOf, type ComponentStatus, type ServiceDefinition } from "#libs/service";
import { GC_SCHEDULER, IMAGES_COMPONENTS, METADATA } from "../components";
import { LeaseResourceHolderProxy } from "#libs/clients/leases";
import { openMetaDB } from "./local/db";
import { LocalNamespaceStore, namespaceNames } from "./local/namespaces";
import { LocalImageStore } from "./local/images";
import { LocalLeaseManager } from "./local/leases";
import { remoteUsage } from "./local/usage";
import { Collector } from "./local/gc/collector";
import { MarkGate } from "./local/gc/gate";
import { gcMetrics, loggedPasses } from "./local/gc/metrics";
import { Scheduler, schedulerConfig } from "./local/gc/scheduler";
import { loadedSnapshotters, remoteSources } from "./local/gc/sources";
import { GC_TRIGGER_TOPICS, gcTriggers } from "./local/gc/triggers";
import { namespacesHandlers } from "./server/namespaces";
import { IMAGES_SERVICE, imagesHandlers } from "./server/images";
import { LEASES_SERVICE, leasesHandlers } from "./server/leases";

const NAMESPACES_SERVICE = "containerd.services.namespaces.v1.Namespaces";
/** How long the first collection waits for the processes it reads from. */
const STARTUP_WAIT_MS = 30_000;

export const imagesService: ServiceDefinition = {
  name: "images",
  components: IMAGES_COMPONENTS,
  async start(sc) {
    const db = openMetaDB(sc.root);
    sc.outbox.attach(db);
    const addresses = { content: dialAddress(sc.config, "content"), snapshots: dialAddress(sc.config, "snapshots"), tasks: dialAddress(sc.config, "tasks"), sandbox: dialAddress(sc.config, "sandbox") };
    const gcCfg = schedulerConfig(sc.configOf(GC_SCHEDULER));
    const gate = new MarkGate();
    // The scheduler comes first (the stores tell it about deletions); it runs the collector, which reads
    // those stores, once started below.
    const scheduler = new Scheduler(gcCfg, loggedPasses(gcMetrics(sc.metrics.registry), sc.log));
    const images = new LocalImageStore(db, sc.outbox, scheduler);
    const leases = new LocalLeaseManager({
      db,
      holders: { content: new LeaseResourceHolderProxy(sc.channels.get(addresses.content)), snapshots: new LeaseResourceHolderProxy(sc.channels.get(addresses.snapshots)) },
      gc: scheduler,
      gate,
      log: sc.log,
      onExpiry: (ns, at) => scheduler.expiresAt(ns, at),
    });
    const snapshotters = loadedSnapshotters(addresses.snapshots, sc.channels);
    const sources = remoteSources(addresses, sc.channels, snapshotters);
    const collector = new Collector({
      sources,
      gate,
      rpcTimeoutMs: gcCfg.rpcTimeoutMs,
      log: sc.log,
      stores: {
        namespaces: () => namespaceNames(db),
        images: (ns) => images.namespaceImages(ns),
        leases: (ns) => leases.namespaceLeases(ns),
        heldBy: (ctx, id) => leases.heldBy(ctx, id),
        removeExpiredLease: (ctx, ns, l) => leases.removeExpired(ctx, ns, l),
        retryForgets: (ctx) => leases.retryForgets(ctx),
      },
    });

    const namespaces = new LocalNamespaceStore(db, sc.outbox, remoteUsage(addresses, (ctx) => snapshotters.names(ctx), sc.channels), (ns) => [
      ...(images.hasImages(ns) ? ["images"] : []),
      ...(leases.hasLeases(ns) ? ["leases"] : []),
    ]);

    sc.server.addService(NAMESPACES_SERVICE, namespacesHandlers(namespaces));
    sc.server.addService(IMAGES_SERVICE, imagesHandlers(images));
    sc.server.addService(LEASES_SERVICE, leasesHandlers(leases));

    const trigger = gcTriggers(
      scheduler,
      (ns, kind, id) => collector.sweptRecently(ns, kind, id),
      (err, env) => sc.log.debug({ err, topic: env.topic }, "ignoring an undecodable event"),
    );
    const unsubscribe = sc.events.subscribe(trigger, { topics: GC_TRIGGER_TOPICS });
    // The processes of a stack start together: the first pass waits for the ones it reads (bounded; a
    // process still down then is skipped and retried as at any time).
    const ready = sources.ready(STARTUP_WAIT_MS).then((late) => {
      if (late.length) sc.log.warn({ late }, "garbage collection starts without processes that do not answer yet");
    });
    scheduler.start({ collector, after: ready, nextExpiry: () => leases.earliestExpiry() });

    const status: Record<string, ComponentStatus> = {
      [uriOf(METADATA)]: { exports: { path: path.join(sc.root, "meta.lmdb") } },
      [uriOf(GC_SCHEDULER)]: {
        exports: {
          PauseThreshold: String(gcCfg.pauseThreshold),
          DeletionThreshold: String(gcCfg.deletionThreshold),
          MutationThreshold: String(gcCfg.mutationThreshold),
          ScheduleDelay: `${gcCfg.scheduleDelayMs}ms`,
        },
      },
    };
    return {
      grpcServices: [NAMESPACES_SERVICE, IMAGES_SERVICE, LEASES_SERVICE],
      status,
      close: async () => {
        unsubscribe();
        scheduler.stop();
        await db.close();
      },
    };
  },
};

