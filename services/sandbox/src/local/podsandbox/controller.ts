/**
 * The `podsandbox` controller (plugin io.containerd.podsandbox.controller.v1.podsandbox): a sandbox is
 * a pod network namespace (CNI) plus a pause container run through the tasks process, holding the
 * pod's IPC/UTS/PID namespaces. Containers join it by its id (their `sandbox` field and the shim group
 * annotation) and by its namespaces; stopping the sandbox stops them, shutting it down removes them.
 *
 * Every step is recorded in LMDB before it acts (`creating`, `starting`) and after it succeeds, so a
 * restart after kill -9 can finish or undo it (`recover`): half-made networks are torn down, a pause
 * task is re-attached, orphaned namespaces are removed.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type { Logger } from "pino";
import { background, namespaceRequired, type CallContext } from "#libs/context";
import { causeText, errCanceled, errFailedPrecondition, isNotFound } from "#libs/errdefs";
import { hostPlatform } from "#libs/service/plugins";
import { listNetns, removeNetns } from "#libs/cni";
import { SANDBOX_LABELS, SANDBOXERS, SandboxState } from "#libs/core/sandbox";
import type { ControllerInstance, ControllerStatus, SandboxController, SandboxCreateOptions, SandboxExitStatus, SandboxInput, SandboxMetric, SandboxPlatform } from "#libs/core/sandbox";
import type { SandboxDB } from "../db";
import { fromStored, toStored } from "../store";
import { RecordedController, recordKey, type ControllerRecord } from "../controller-core";
import type { PodNetworks, PodNetworkState } from "./network";
import { ensurePauseRootfs, pauseRootfsMount, pauseSpec, sandboxHostname } from "./pause";
import { exitWithin, LOST_EXIT, removeMembers, removePause, SIGKILL, stopMembers } from "./members";
import { TaskStatus } from "#libs/core/tasks";
import type { PodTasks } from "./tasks";
import { dateFromStored, now as nowDate, storedTime } from "#libs/time";

export type PodPhase = "creating" | "created" | "starting" | "running" | "stopped";

export interface PodRecord extends ControllerRecord {
  phase: PodPhase;
  network: PodNetworkState;
  /** True once the network has been torn down (after stop). */
  networkDown?: boolean;
  annotations: Record<string, string>;
  pid?: number;
  /** Epoch milliseconds. */
  started?: number;
  exitStatus?: number;
  /** As `created`. */
  exited?: bigint | number;
}

const POD_PREFIX = "pod";
export const podKey = (ns: string, id: string): string[] => recordKey(POD_PREFIX, ns, id);


export interface PodSandboxOptions {
  db: SandboxDB;
  tasks: PodTasks;
  networks: PodNetworks;
  /** Directory of the shared pause rootfs. */
  pauseDir: string;
  /** Where namespaces are pinned (scanned for orphans at recovery). */
  netnsDir: string;
  log: Logger;
  /** How long Stop waits for the pause and member tasks to exit after SIGKILL (default 10 s). */
  killWaitMs?: number;
}

interface Waiter {
  promise: Promise<SandboxExitStatus>;
  resolve: (s: SandboxExitStatus) => void;
}

export class PodSandboxController extends RecordedController<PodRecord> implements SandboxController {
  private readonly waiters = new Map<string, Waiter>();
  private readonly monitors = new Set<string>();
  private closed = false;

  constructor(private readonly o: PodSandboxOptions) {
    super(o.db, POD_PREFIX, SANDBOXERS.podsandbox);
  }

  private waiter(ns: string, id: string): Waiter {
    const k = `${ns}/${id}`;
    let w = this.waiters.get(k);
    if (!w) {
      let resolve!: (s: SandboxExitStatus) => void;
      const promise = new Promise<SandboxExitStatus>((r) => (resolve = r));
      w = { promise, resolve };
      this.waiters.set(k, w);
    }
    return w;
  }

  private exited(ns: string, id: string, st: SandboxExitStatus): void {
    const k = `${ns}/${id}`;
    const w = this.waiters.get(k);
    this.waiters.delete(k);
    w?.resolve(st);
  }

  async create(ctx: CallContext, input: SandboxInput, opts: SandboxCreateOptions = {}): Promise<void> {
    await this.createRecord(ctx, input, async (ns, sandbox, created) => {
      const id = sandbox.id;
      const annotations = { ...(opts.annotations ?? {}) };
      const plan = this.o.networks.plan(ns, id, annotations, opts.netnsPath ?? "");
      const rec: PodRecord = { phase: "creating", sandbox: toStored(sandbox), network: plan, annotations, created };
      await this.put(ns, id, rec);
      try {
        rec.network = await this.o.networks.setup(plan, id);
      } catch (e) {
        await this.remove(ns, id);
        throw e;
      }
      rec.phase = "created";
      await this.put(ns, id, rec);
    });
  }

  async start(ctx: CallContext, id: string): Promise<ControllerInstance> {
    return this.withRecord(ctx, id, async (ns, rec) => {
      this.requireCreated(id, rec);
      rec.phase = "starting";
      await this.put(ns, id, rec);
      const sandbox = fromStored(id, rec.sandbox);
      let pid: number;
      try {
        const rootfs = ensurePauseRootfs(this.o.pauseDir);
        const spec = pauseSpec({ namespace: ns, sandboxId: id, hostname: sandboxHostname(id, sandbox.spec), netns: rec.network.netns, annotations: rec.annotations });
        const container = {
          id,
          labels: { ...sandbox.labels, [SANDBOX_LABELS.criContainerType]: "sandbox", [SANDBOX_LABELS.criSandboxId]: id },
          runtime: sandbox.runtime.name,
          spec,
          sandbox: id,
        };
        try {
          await this.o.tasks.createContainer(ctx, container);
        } catch (e) {
          if ((e as { code?: string }).code !== "already exists") throw e;
          await removePause(this.o.tasks, ctx, id); // a leftover of an interrupted start
          await this.o.tasks.createContainer(ctx, container);
        }
        await this.o.tasks.createTask(ctx, id, [pauseRootfsMount(rootfs)]);
        pid = await this.o.tasks.startTask(ctx, id);
      } catch (e) {
        await removePause(this.o.tasks, background(ns), id).catch((err: unknown) => this.o.log.warn({ err, sandbox: id }, "cleaning up a failed pause start"));
        rec.phase = "created";
        await this.put(ns, id, rec);
        throw e;
      }
      rec.phase = "running";
      rec.pid = pid;
      rec.started = Date.now();
      await this.put(ns, id, rec);
      this.monitor(ns, id);
      return {
        sandboxId: id,
        pid,
        createdAt: dateFromStored(rec.created),
        labels: { ...sandbox.labels },
        address: "",
        version: 0,
      };
    });
  }

  /** Watch the pause task in the background until it exits; survives the tasks process restarting. */
  private monitor(ns: string, id: string): void {
    const k = `${ns}/${id}`;
    if (this.monitors.has(k)) return;
    this.monitors.add(k);
    void (async () => {
      let delay = 200;
      while (!this.closed) {
        const rec = this.find(ns, id);
        if (!rec || rec.phase !== "running") break;
        let exit: SandboxExitStatus | undefined;
        try {
          const ctx = background(ns);
          exit = await this.o.tasks.waitTask(ctx, id);
        } catch (e) {
          if (isNotFound(e)) {
            exit = { exitStatus: LOST_EXIT, exitedAt: nowDate() };
          } else {
            if (this.closed) break;
            this.o.log.debug({ err: causeText(e), sandbox: id }, "waiting for the pause task; retrying");
            await new Promise((r) => setTimeout(r, delay));
            delay = Math.min(delay * 2, 2000);
            continue;
          }
        }
        await this.recordExit(ns, id, exit);
        break;
      }
      this.monitors.delete(k);
    })();
  }

  private async recordExit(ns: string, id: string, exit: SandboxExitStatus): Promise<void> {
    const rec = this.find(ns, id);
    if (rec && rec.phase !== "stopped") {
      rec.phase = "stopped";
      rec.exitStatus = exit.exitStatus;
      rec.exited = storedTime(exit.exitedAt);
      await this.put(ns, id, rec);
    }
    this.exited(ns, id, { exitStatus: rec?.exitStatus ?? exit.exitStatus, exitedAt: rec?.exited ? dateFromStored(rec.exited) : exit.exitedAt });
  }

  async platform(ctx: CallContext, id: string): Promise<SandboxPlatform> {
    this.recordOf(ctx, id);
    const p = hostPlatform();
    return { os: p.os, architecture: p.architecture, variant: p.variant ?? "" };
  }

  async stop(ctx: CallContext, id: string, opts: { timeoutSecs?: number } = {}): Promise<void> {
    await this.withRecord(ctx, id, (ns, rec) => this.doStop(ctx, ns, id, rec, (opts.timeoutSecs ?? 0) * 1000));
  }

  private async doStop(ctx: CallContext, ns: string, id: string, rec: PodRecord, graceMs: number): Promise<void> {
    // Containers can join only a running sandbox: one that never ran has none to stop.
    if (rec.started) await stopMembers(this.o.tasks, ctx, id, graceMs, this.o.killWaitMs ?? 10000);
    if (rec.phase === "running" || rec.phase === "starting") {
      let st: { status: number; exitStatus: number; exitedAt?: Date } | undefined;
      try {
        st = await this.o.tasks.getTask(ctx, id);
      } catch (e) {
        if (!isNotFound(e)) throw e;
      }
      let exit: SandboxExitStatus | undefined;
      if (!st) exit = { exitStatus: LOST_EXIT, exitedAt: nowDate() };
      else if (st.status === TaskStatus.Stopped) exit = { exitStatus: st.exitStatus, exitedAt: st.exitedAt ?? nowDate() };
      else {
        await this.o.tasks.killTask(ctx, id, SIGKILL, true).catch((e: unknown) => {
          if (!isNotFound(e)) throw e;
        });
        exit = await exitWithin(this.o.tasks, ctx, id, this.o.killWaitMs ?? 10000);
        if (!exit) throw errFailedPrecondition(`sandbox ${JSON.stringify(id)}: the pause task did not exit after SIGKILL`);
      }
      await this.recordExit(ns, id, exit);
    } else if (rec.phase === "created" || rec.phase === "creating") {
      await this.recordExit(ns, id, { exitStatus: 0, exitedAt: nowDate() });
    }
    await this.networkDown(ns, id);
  }

  private async networkDown(ns: string, id: string): Promise<void> {
    const rec = this.get(ns, id);
    if (rec.networkDown) return;
    await this.o.networks.teardown(rec.network, id);
    rec.networkDown = true;
    await this.put(ns, id, rec);
  }

  async wait(ctx: CallContext, id: string): Promise<SandboxExitStatus> {
    const ns = namespaceRequired(ctx);
    const rec = this.get(ns, id);
    if (rec.phase === "stopped") return recordedExit(rec);
    const w = this.waiter(ns, id);
    return new Promise((resolve, reject) => {
      const onAbort = (): void => reject(errCanceled(`wait for sandbox ${JSON.stringify(id)}`));
      if (ctx.signal.aborted) return onAbort();
      ctx.signal.addEventListener("abort", onAbort, { once: true });
      void w.promise.then((s) => {
        ctx.signal.removeEventListener("abort", onAbort);
        resolve(s);
      });
    });
  }

  async status(ctx: CallContext, id: string, verbose = false): Promise<ControllerStatus> {
    const rec = this.recordOf(ctx, id);
    const state = rec.phase === "running" ? SandboxState.Ready : rec.phase === "stopped" ? SandboxState.NotReady : SandboxState.Unknown;
    const info: Record<string, string> = {
      phase: rec.phase,
      network: rec.network.mode,
      netns: rec.networkDown ? "" : rec.network.netns,
      ips: rec.networkDown ? "" : rec.network.addresses.map((a) => a.replace(/\/\d+$/, "")).join(","),
      pause_container: id,
      runtime: rec.sandbox.runtime.name,
    };
    if (verbose) info.info = JSON.stringify({ ...rec, sandbox: undefined, network: { ...rec.network, net: rec.network.net ? { name: rec.network.net.name, source: rec.network.net.source } : undefined } }, (_k, v: unknown) => (typeof v === "bigint" ? v.toString() : v));
    const out: ControllerStatus = { sandboxId: id, pid: rec.phase === "running" ? rec.pid ?? 0 : 0, state, info, createdAt: dateFromStored(rec.created), address: "", version: 0 };
    if (rec.exited) out.exitedAt = dateFromStored(rec.exited);
    return out;
  }

  async shutdown(ctx: CallContext, id: string): Promise<void> {
    await this.withRecord(ctx, id, async (ns, rec) => {
      if (rec.phase !== "stopped" || !rec.networkDown) await this.doStop(ctx, ns, id, rec, 0);
      if (!rec.started) {
        // Never ran: at most a leftover of a failed start in the tasks process, removed if it can be.
        await removePause(this.o.tasks, ctx, id).catch((err: unknown) => this.o.log.warn({ err: causeText(err), sandbox: id }, "removing the pause container of a sandbox that never ran"));
        await this.remove(ns, id);
        this.exited(ns, id, { exitStatus: 0, exitedAt: nowDate() });
        return;
      }
      await removeMembers(this.o.tasks, ctx, id, this.o.log);
      await removePause(this.o.tasks, ctx, id);
      await this.remove(ns, id);
      this.exited(ns, id, recordedExit(rec));
    });
  }

  async metrics(ctx: CallContext, id: string): Promise<SandboxMetric> {
    const rec = this.recordOf(ctx, id);
    if (rec.phase !== "running") throw errFailedPrecondition(`sandbox ${JSON.stringify(id)} is not running`);
    const m = await this.o.tasks.metrics(ctx, id);
    return { timestamp: m.timestamp, id, ...(m.data ? { data: m.data } : {}) };
  }

  /**
   * After a restart: undo half-made creates, remove orphaned namespaces, re-attach to running pause
   * tasks, settle interrupted starts (in the background, since the tasks process may still be starting).
   */
  async recover(): Promise<void> {
    const referenced = new Set<string>();
    for (const { ns, id, rec } of this.records()) {
      if (rec.phase === "creating") {
        this.o.log.info({ sandbox: id, namespace: ns }, "undoing an interrupted sandbox create");
        try {
          await this.o.networks.teardown(rec.network, id);
          await this.remove(ns, id);
        } catch (err) {
          this.o.log.warn({ err, sandbox: id }, "tearing down the network of an interrupted create; will retry at the next start");
          if (rec.network.owned) referenced.add(rec.network.netns);
        }
        continue;
      }
      if (rec.network.owned && !rec.networkDown) referenced.add(rec.network.netns);
      if (rec.phase === "running") this.monitor(ns, id);
      else if (rec.phase === "starting") void this.settleStart(ns, id);
    }
    for (const f of listNetns(this.o.netnsDir)) {
      if (referenced.has(f)) continue;
      this.o.log.info({ netns: f }, "removing an orphaned network namespace");
      await removeNetns(f).catch((err: unknown) => this.o.log.warn({ err, netns: f }, "removing an orphaned network namespace"));
    }
  }

  /** A start interrupted by a crash: keep the pause task if it runs, else clear it and go back to created. */
  private async settleStart(ns: string, id: string): Promise<void> {
    const ctx = background(ns);
    for (let delay = 200; !this.closed; delay = Math.min(delay * 2, 2000)) {
      try {
        await this.locked(ns, id, async () => {
          const rec = this.find(ns, id);
          if (!rec || rec.phase !== "starting") return;
          let st;
          try {
            st = await this.o.tasks.getTask(ctx, id);
          } catch (e) {
            if (!isNotFound(e)) throw e;
          }
          if (st && st.status === TaskStatus.Running) {
            rec.phase = "running";
            rec.pid = st.pid;
            rec.started = Date.now();
            await this.put(ns, id, rec);
            this.monitor(ns, id);
            return;
          }
          await removePause(this.o.tasks, ctx, id);
          rec.phase = "created";
          await this.put(ns, id, rec);
        });
        return;
      } catch (err) {
        this.o.log.debug({ err: causeText(err), sandbox: id }, "settling an interrupted sandbox start; retrying");
        await new Promise((r) => setTimeout(r, delay));
      }
    }
  }

  /** Stop background work (monitors end at their next wake-up). */
  close(): void {
    this.closed = true;
  }
}

/** The exit a stopped sandbox's record holds. */
function recordedExit(rec: PodRecord): SandboxExitStatus {
  return { exitStatus: rec.exitStatus ?? 0, exitedAt: rec.exited !== undefined ? dateFromStored(rec.exited) : nowDate() };
}

/** Create the directories the controller uses. */
export function podSandboxDirs(root: string, state: string): { pauseDir: string; netnsDir: string } {
  const pauseDir = path.join(root, "pause");
  const netnsDir = path.join(state, "netns");
  fs.mkdirSync(netnsDir, { recursive: true, mode: 0o711 });
  return { pauseDir, netnsDir };
}
