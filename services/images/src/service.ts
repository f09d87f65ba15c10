/**
 * The images process's wiring: namespaces, images and leases in LMDB, their gRPC adapters, and the
 * garbage collector (collector, scheduler, metrics, the events that wake it) across every process that
 * holds data.
 */
import * as path from "node:path";
import { uriOf, type ComponentStatus, type ServiceDefinition } from "../../../libs/service";
import { GC_SCHEDULER, IMAGES_COMPONENTS, METADATA } from "../components";
import { unpackAny } from "../../../libs/proto";
import { LeaseResourceHolderProxy } from "../../../libs/clients/leases";
import { openMetaDB } from "./local/db";
import { LocalNamespaceStore } from "./local/namespaces";
import { LocalImageStore } from "./local/images";
import { LocalLeaseManager } from "./local/leases";
import { remoteUsage } from "./local/usage";
import { Collector } from "./local/gc/collector";
import { MarkGate } from "./local/gc/gate";
import { gcMetrics } from "./local/gc/metrics";
import { Scheduler, schedulerConfig } from "./local/gc/scheduler";
import { remoteSources } from "./local/gc/sources";
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
    const s = sc.config.flotilla.services;
    const addresses = { content: s.content.address, snapshots: s.snapshots.address, tasks: s.tasks.address, sandbox: s.sandbox.address };
    const gcCfg = schedulerConfig(sc.configOf(GC_SCHEDULER));
    const observer = gcMetrics(sc.metrics.registry);
    const gate = new MarkGate();

    let collector: Collector | undefined;
    let leases: LocalLeaseManager | undefined;
    const scheduler = new Scheduler({ collect: (ctx, only) => collector!.collect(ctx, only), progress: () => collector?.progress() }, gcCfg, {
      onPass: (st) => {
        observer.onPass(st);
        const freed = Object.values(st.freed).reduce((a, b) => a + b, 0);
        const level = st.skipped.length ? "warn" : freed ? "info" : "debug";
        sc.log[level]({ pass: st.pass, ms: Math.round(st.elapsedMs * 10) / 10, freed: st.freed, phases: st.phasesMs, skipped: st.skipped.length ? st.skipped : undefined }, "garbage collected");
      },
      onError: (e) => {
        observer.onError(e);
        sc.log.error({ err: e }, "garbage collection failed");
      },
      afterPass: () => {
        const next = leases?.earliestExpiry();
        if (next) scheduler.expiresAt(next.ns, next.at);
      },
    });

    const images = new LocalImageStore(db, sc.events, scheduler);
    leases = new LocalLeaseManager({
      db,
      holders: { content: new LeaseResourceHolderProxy(sc.channels.get(addresses.content)), snapshots: new LeaseResourceHolderProxy(sc.channels.get(addresses.snapshots)) },
      gc: scheduler,
      gate,
      log: sc.log,
      onExpiry: (ns, at) => scheduler.expiresAt(ns, at),
    });
    const lm = leases;
    const sources = remoteSources(addresses, sc.channels);
    collector = new Collector({
      sources,
      gate,
      rpcTimeoutMs: gcCfg.rpcTimeoutMs,
      log: sc.log,
      stores: {
        namespaces: () => [...new Set([...db.getKeys({ start: ["ns"], end: ["ns\0"] })].filter((k) => k.length === 2).map((k) => String(k[1])))],
        images: (ns) => images.namespaceImages(ns),
        leases: (ns) => lm.namespaceLeases(ns),
        heldBy: (ctx, id) => lm.heldBy(ctx, id),
        removeExpiredLease: (ctx, ns, l) => lm.removeExpired(ctx, ns, l),
        retryForgets: (ctx) => lm.retryForgets(ctx),
      },
    });

    const usage = remoteUsage(addresses, ["overlayfs", "native"], sc.channels);
    const namespaces = new LocalNamespaceStore(db, sc.events, usage, (ns) => [
      ...(images.hasImages(ns) ? ["images"] : []),
      ...(lm.hasLeases(ns) ? ["leases"] : []),
    ]);

    sc.server.addService(NAMESPACES_SERVICE, namespacesHandlers(namespaces));
    sc.server.addService(IMAGES_SERVICE, imagesHandlers(images));
    sc.server.addService(LEASES_SERVICE, leasesHandlers(lm));

    // Deletions in other processes free what only they referenced: collect after them (but not after
    // the collector's own deletes). Creations mark the namespace for the next pass.
    const unsubscribe = sc.events.subscribe((env) => {
      try {
        const ns = env.namespace;
        switch (env.topic) {
          case "/containers/delete":
          case "/sandboxes/delete":
            scheduler.markDirty(ns);
            break;
          case "/content/delete": {
            const e = unpackAny<{ digest: string }>(env.event);
            if (!collector!.sweptRecently(ns, "content", e.digest)) scheduler.markDirty(ns);
            break;
          }
          case "/snapshot/remove": {
            const e = unpackAny<{ key: string; snapshotter: string }>(env.event);
            if (!collector!.sweptRecently(ns, "snapshot", `${e.snapshotter}/${e.key}`)) scheduler.markDirty(ns);
            break;
          }
          case "/content/create":
          case "/snapshot/prepare":
          case "/snapshot/commit":
          case "/containers/create":
          case "/containers/update":
            scheduler.markMutation(ns);
            break;
        }
      } catch (err) {
        sc.log.debug({ err, topic: env.topic }, "ignoring an undecodable event");
      }
    });
    // The processes of a stack start together: the first pass waits for the ones it reads (bounded; a
    // process still down then is skipped and retried as at any time).
    scheduler.start(sources.ready!(STARTUP_WAIT_MS).then((late) => {
      if (late.length) sc.log.warn({ late }, "garbage collection starts without processes that do not answer yet");
    }));
    const first = lm.earliestExpiry();
    if (first) scheduler.expiresAt(first.ns, first.at);

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

