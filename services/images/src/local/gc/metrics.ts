/**
 * Prometheus metrics of the garbage collector: passes, what each freed, how long it took, what it
 * skipped; and the log lines of each pass.
 */
import type { Logger } from "pino";
import { Counter, Gauge, Histogram, type Registry } from "prom-client";
import type { GCStats } from "#libs/core/gc";

export interface GCObserver {
  onPass(s: GCStats): void;
  onError(e: unknown): void;
}

export function gcMetrics(registry: Registry): GCObserver {
  const passes = new Counter({ name: "flotilla_gc_passes_total", help: "Garbage collection passes, by result.", labelNames: ["result"], registers: [registry] });
  const freed = new Counter({ name: "flotilla_gc_freed_total", help: "Objects garbage collection removed, by resource.", labelNames: ["resource"], registers: [registry] });
  const skipped = new Counter({ name: "flotilla_gc_skipped_total", help: "Namespaces (or sources) a pass could not collect because a process did not answer.", registers: [registry] });
  const seconds = new Histogram({
    name: "flotilla_gc_duration_seconds",
    help: "Duration of a garbage collection pass, in seconds.",
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [registry],
  });
  const last = new Gauge({ name: "flotilla_gc_last_pass_freed", help: "Objects the last pass removed, by resource.", labelNames: ["resource"], registers: [registry] });
  for (const r of ["content", "snapshots", "ingests", "leases"]) {
    freed.inc({ resource: r }, 0);
    last.set({ resource: r }, 0);
  }
  passes.inc({ result: "ok" }, 0);
  passes.inc({ result: "error" }, 0);
  return {
    onPass(s) {
      passes.inc({ result: "ok" });
      seconds.observe(s.elapsedMs / 1000);
      for (const [r, n] of Object.entries(s.freed)) {
        freed.inc({ resource: r }, n);
        last.set({ resource: r }, n);
      }
      if (s.skipped.length) skipped.inc(s.skipped.length);
    },
    onError() {
      passes.inc({ result: "error" });
    },
  };
}

/** `observer`, and a log line per pass (info when it freed anything, warn when it skipped data) or failure. */
export function loggedPasses(observer: GCObserver, log: Logger): GCObserver {
  return {
    onPass(st) {
      observer.onPass(st);
      const freed = Object.values(st.freed).reduce((a, b) => a + b, 0);
      const level = st.skipped.length ? "warn" : freed ? "info" : "debug";
      log[level]({ pass: st.pass, ms: Math.round(st.elapsedMs * 10) / 10, freed: st.freed, phases: st.phasesMs, skipped: st.skipped.length ? st.skipped : undefined }, "garbage collected");
    },
    onError(e) {
      observer.onError(e);
      log.error({ err: e }, "garbage collection failed");
    },
  };
}
