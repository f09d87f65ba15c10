/** The GC scheduler: startup pass, debounced passes after deletions, sync waits, namespaces, retries. */
import * as assert from "node:assert/strict";
import { describe, it } from "node:test";
import { background } from "#libs/context";
import type { GCStats } from "#libs/core/gc";
import { Scheduler, schedulerConfig as fromChecked, SCHEDULER_CONFIG_SCHEMA, DEFAULT_SCHEDULER_CONFIG, type SchedulerConfig } from "#services/images/src/local/gc/scheduler";

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

class FakeCollector {
  calls: { only?: string[]; start: number }[] = [];
  ms = 5;
  skip = false;
  fail = false;
  async collect(_ctx: unknown, only?: ReadonlySet<string>): Promise<GCStats> {
    const start = Date.now();
    this.calls.push({ only: only ? [...only].sort() : undefined, start });
    await sleep(this.ms);
    if (this.fail) throw new Error("boom");
    return { pass: this.calls.length, startedAt: new Date(start), elapsedMs: this.ms, freed: { content: 0, snapshots: 0, ingests: 0, leases: 0 }, skipped: this.skip ? ["content: down"] : [] };
  }
}

const schedulerConfig = (t: Record<string, unknown>): SchedulerConfig => fromChecked(SCHEDULER_CONFIG_SCHEMA.check(t, ["plugins", "io.containerd.gc.v1.scheduler"]));
const cfg = (o: Partial<SchedulerConfig> = {}): SchedulerConfig => ({ ...DEFAULT_SCHEDULER_CONFIG, startupDelayMs: 0, fullScanIntervalMs: 0, ...o });

describe("gc - scheduler", () => {
  it("parses containerd's scheduler config", () => {
    const c = schedulerConfig({ pause_threshold: 0.9, deletion_threshold: 2, mutation_threshold: 7, schedule_delay: "250ms", startup_delay: "1s" });
    assert.equal(c.pauseThreshold, 0.5, "capped at 0.5");
    assert.equal(c.deletionThreshold, 2);
    assert.equal(c.mutationThreshold, 7);
    assert.equal(c.scheduleDelayMs, 250);
    assert.equal(c.startupDelayMs, 1000);
    assert.throws(() => schedulerConfig({ schedule_delay: "soon" }), /\[plugins\."io\.containerd\.gc\.v1\.scheduler"\] schedule_delay: expected a duration/);
    assert.throws(() => schedulerConfig({ pause_threshold: "0.1" }), /pause_threshold: expected a number, got string/);
  });

  it("runs a pass over every namespace at startup", async () => {
    const col = new FakeCollector();
    const s = new Scheduler(cfg({ startupDelayMs: 10 }));
    s.start({ collector: col });
    await sleep(60);
    s.stop();
    assert.equal(col.calls.length, 1);
    assert.equal(col.calls[0]!.only, undefined);
  });

  it("scheduleAndWait runs a pass for the namespace and resolves with its stats", async () => {
    const col = new FakeCollector();
    const s = new Scheduler(cfg());
    s.start({ collector: col });
    const st = await s.scheduleAndWait(background("ns1"));
    assert.equal(st.pass, 1);
    assert.equal(col.calls[0]!.only, undefined, "the first pass covers everything");
    const st2 = await s.scheduleAndWait(background("ns1"));
    assert.equal(st2.pass, 2);
    assert.deepEqual(col.calls[1]!.only, ["ns1"]);
    s.stop();
  });

  it("a sync wait that arrives during a pass gets the next pass", async () => {
    const col = new FakeCollector();
    col.ms = 40;
    const s = new Scheduler(cfg());
    s.start({ collector: col });
    const first = s.scheduleAndWait(background("a"));
    await sleep(10);
    const t = Date.now();
    const second = await s.scheduleAndWait(background("b"));
    assert.equal((await first).pass, 1);
    assert.equal(second.pass, 2);
    assert.ok(second.startedAt.getTime() >= t, "the pass started after the call");
    s.stop();
  });

  it("a sync wait joins the running pass while that pass has not read what was deleted", async () => {
    let phase: "start" | "read" | "leases" | "sweep" | undefined;
    let only: ReadonlySet<string> | undefined;
    const col = {
      passes: 0,
      async collect(_c: unknown, o?: ReadonlySet<string>): Promise<GCStats> {
        only = o;
        this.passes++;
        const n = this.passes;
        for (const p of ["start", "read", "leases", "sweep"] as const) {
          phase = p;
          await sleep(30);
        }
        phase = undefined;
        return { pass: n, startedAt: new Date(), elapsedMs: 120, freed: { content: 0, snapshots: 0, ingests: 0, leases: 0 }, skipped: [] };
      },
      progress: () => (phase ? { phase, only } : undefined),
    };
    const s = new Scheduler(cfg());
    s.start({ collector: col });
    const first = s.scheduleAndWait(background("j"));
    await sleep(10); // the pass is in "start"
    const joinImages = s.scheduleAndWait(background("j"), "images");
    const joinLeases = s.scheduleAndWait(background("j"), "leases");
    await sleep(30); // now in "read": images are being read
    const nextImages = s.scheduleAndWait(background("j"), "images");
    const joinLeases2 = s.scheduleAndWait(background("j"), "leases");
    assert.equal((await first).pass, 1);
    assert.equal((await joinImages).pass, 1);
    assert.equal((await joinLeases).pass, 1);
    assert.equal((await joinLeases2).pass, 1);
    assert.equal((await nextImages).pass, 2);
    s.stop();
  });

  it("deletions are debounced: one pass for a burst, later ones wait for the pause interval", async () => {
    const col = new FakeCollector();
    col.ms = 2;
    const s = new Scheduler(cfg({ pauseThreshold: 0.02 }));
    s.start({ collector: col });
    await s.scheduleAndWait(background("x")); // sets the interval: 2ms/0.02 - 2ms = 98ms
    for (let i = 0; i < 20; i++) s.markDirty("x");
    await sleep(30);
    assert.equal(col.calls.length, 1, "not before the interval");
    await sleep(150);
    assert.equal(col.calls.length, 2, "one pass for the burst");
    assert.deepEqual(col.calls[1]!.only, ["x"]);
    s.stop();
  });

  it("mutations alone collect only past the threshold", async () => {
    const col = new FakeCollector();
    const s = new Scheduler(cfg({ mutationThreshold: 3, pauseThreshold: 0.5 }));
    s.start({ collector: col });
    await s.scheduleAndWait(background("m"));
    s.markMutation("m");
    s.markMutation("m");
    await sleep(60);
    assert.equal(col.calls.length, 1);
    s.markMutation("m");
    await sleep(60);
    assert.equal(col.calls.length, 2);
    s.stop();
  });

  it("a pass that skipped data is retried", async () => {
    const col = new FakeCollector();
    col.skip = true;
    const s = new Scheduler(cfg({ pauseThreshold: 0.5 }));
    s.start({ collector: col });
    await s.scheduleAndWait(background("r"));
    col.skip = false;
    await sleep(1300);
    assert.ok(col.calls.length >= 2, `retried (${col.calls.length} passes)`);
    s.stop();
  });

  it("a successful pass takes over a pending retry: no extra pass later", async () => {
    const col = new FakeCollector();
    col.skip = true;
    col.skip = false;
    const s = new Scheduler(cfg({ pauseThreshold: 0.5 }));
    s.start({ collector: col });
    await s.scheduleAndWait(background("r")); // the first pass covers everything
    col.skip = true;
    await s.scheduleAndWait(background("r"));
    col.skip = false;
    const st = await s.scheduleAndWait(background("q"));
    assert.equal(st.pass, 3);
    assert.deepEqual(col.calls[2]!.only, ["q", "r"], "the sync pass covers the namespace awaiting a retry");
    await sleep(1300);
    assert.equal(col.calls.length, 3, "the retry timer did not fire a pass after the successful one");
    s.stop();
  });

  it("a failing pass rejects its waiters; the next one runs", async () => {
    const col = new FakeCollector();
    col.fail = true;
    const s = new Scheduler(cfg());
    s.start({ collector: col });
    await assert.rejects(s.scheduleAndWait(background("f")), /boom/);
    col.fail = false;
    const st = await s.scheduleAndWait(background("f"));
    assert.equal(st.pass, 2);
    s.stop();
  });

  it("a lease expiry wakes the collector for its namespace", async () => {
    const col = new FakeCollector();
    const s = new Scheduler(cfg({ pauseThreshold: 0.5 }));
    s.start({ collector: col });
    await s.scheduleAndWait(background("e"));
    s.expiresAt("e", new Date(Date.now() + 50));
    s.expiresAt("e2", new Date(Date.now() + 5000));
    await sleep(150);
    assert.equal(col.calls.length, 2);
    assert.deepEqual(col.calls[1]!.only, ["e"]);
    s.stop();
  });

  it("nothing runs before start; marks made before it are collected once started", async () => {
    const col = new FakeCollector();
    const s = new Scheduler(cfg());
    s.markDirty("early");
    const waited = s.scheduleAndWait(background("early"));
    await sleep(50);
    assert.equal(col.calls.length, 0, "no pass without a collector");
    s.start({ collector: col });
    const st = await waited;
    assert.equal(st.pass, 1);
    s.stop();
  });

  it("start arms the earliest lease expiry, and each pass looks again", async () => {
    const col = new FakeCollector();
    const s = new Scheduler(cfg({ pauseThreshold: 0.5 }));
    // As the lease store: an expired lease goes in the pass it wakes, so the next look finds the next one.
    let next: { ns: string; at: Date } | undefined = { ns: "x", at: new Date(Date.now() + 60) };
    const take = (): { ns: string; at: Date } | undefined => {
      const n = next;
      next = undefined;
      return n;
    };
    s.start({ collector: col, nextExpiry: take });
    await sleep(30);
    assert.equal(col.calls.length, 0);
    await sleep(150);
    assert.equal(col.calls.length, 1, "woken at the expiry");
    assert.deepEqual(col.calls[0]!.only, undefined, "the first pass covers everything");
    next = { ns: "y", at: new Date(Date.now() + 50) };
    await s.scheduleAndWait(background("z"));
    await sleep(150);
    assert.equal(col.calls.length, 3, "the expiry read after the pass woke another");
    assert.deepEqual(col.calls[2]!.only, ["y"]);
    s.stop();
  });
});
