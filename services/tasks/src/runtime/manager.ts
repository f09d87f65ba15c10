/**
 * The runtime v2 manager (containerd's runtime/v2 ShimManager + TaskManager): makes the bundle, runs
 * the shim's `start`, connects over ttrpc, creates the task; deletes task, shim and bundle; notices a
 * shim whose connection drops and cleans up after it (`shim delete`, then /tasks/exit and
 * /tasks/delete, as containerd's cleanupAfterDeadShim); and on start-up reconnects to the shims that
 * outlived the previous tasks process.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type { Logger } from "pino";
import { namespaceRequired, background, type CallContext } from "#libs/context";
import type { Context } from "#libs/tracing";
import { errAlreadyExists, errorCode, ErrorCodes, FlotillaError, isNotFound } from "#libs/errdefs";
import { isClosedError } from "#libs/ttrpc";
import type { EventPublisher } from "#libs/events";
import type { ForwardedDeletes } from "./forwarded";
import { toTimestamp } from "#libs/proto";
import type { Container } from "#libs/core/containers";
import { SANDBOX_LABELS } from "#libs/core/sandbox";
import { TASK_EVENTS, type CreateTaskInput, type ExitInfo } from "#libs/core/tasks";
import { Bundle, listBundles, type BundleDirs } from "./bundle";
import { shimDelete, shimStart, type BootstrapResult, type ShimEnv } from "./binary";
import type { RuntimeResolver, ShimCommand } from "./runtimes";
import { ShimTask } from "./shim";
import type { WarmPool } from "./warm";
import { fromTimestamp, now } from "#libs/time";
import { mountToProto } from "#libs/mount";

export interface ManagerOptions {
  dirs: BundleDirs;
  resolver: RuntimeResolver;
  /** The daemon address shims are told (the gateway socket), and the ttrpc events socket. */
  address: string;
  ttrpcAddress: string;
  publishBinary: string;
  debug: boolean;
  events: EventPublisher;
  /** Forwarded /tasks/delete events, awaited (briefly) before Delete answers. */
  forwardedDeletes?: ForwardedDeletes;
  log: Logger;
  /** The runtime name of a stored container (for bundles without shim-binary-path). */
  runtimeOf?: (ns: string, id: string) => Promise<string | undefined>;
  /** Pre-started Flotilla shims (skips `shim start` for the built-in runtimes). */
  warm?: WarmPool;
  /**
   * Containers one Flotilla shim may serve in a namespace (1 = a shim per container, containerd's
   * default). Specs naming a group (`io.containerd.runc.v2.group`, `io.kubernetes.cri.sandbox-id`)
   * always share their group's shim.
   */
  shimGroupSize?: number;
}

/**
 * The shim group of a container: containerd's grouping annotations in its spec (what containerd's runc
 * shim reads; `ctr run --label` puts its labels there too), else the container's labels of the same
 * names, else the sandbox its record names. "" = a shim of its own.
 */
export function groupOf(spec: Uint8Array, container?: Pick<Container, "labels" | "sandbox">): string {
  const pick = (m: Record<string, string> | undefined): string => m?.[SANDBOX_LABELS.runcGroup] || m?.[SANDBOX_LABELS.criSandboxId] || "";
  let annotations: Record<string, string> | undefined;
  try {
    annotations = (JSON.parse(Buffer.from(spec).toString()) as { annotations?: Record<string, string> }).annotations;
  } catch {
    annotations = undefined;
  }
  return pick(annotations) || pick(container?.labels) || container?.sandbox || "";
}

/** The bundle file holding the task's shim group (read back when the tasks process restarts). */
const GROUP_FILE = "group";

/** A task API endpoint given as `<protocol>+<address>` (a bare address means ttrpc); version 3 when unset. */
export function taskApiEndpoint(address: string, version?: number): BootstrapResult {
  const m = /^([a-z]+)\+(.+)$/.exec(address);
  const protocol = m ? m[1]! : "ttrpc";
  if (protocol !== "ttrpc") throw new FlotillaError(ErrorCodes.NotImplemented, `task API protocol ${JSON.stringify(protocol)} is not supported`);
  const v = version || 3;
  if (v < 2 || v > 3) throw new FlotillaError(ErrorCodes.InvalidArgument, `task API version ${v} is not supported`);
  return { version: v, address: m ? m[2]! : address, protocol };
}

/** An error of the same class with more context, as Go's fmt.Errorf("...: %w"). */
export function wrap(e: unknown, prefix: string): Error {
  const code = errorCode(e);
  const msg = e instanceof Error ? e.message : String(e);
  return new FlotillaError(code, `${prefix}: ${msg}`, { cause: e });
}

/** Flotilla's shim's pool service (services/shim/src/daemon.ts). */
export const POOL_SERVICE = "flotilla.shim.v1.Pool";

export const taskNotFound = (id: string): FlotillaError => new FlotillaError(ErrorCodes.NotFound, `task ${id} not found`);

const key = (ns: string, id: string): string => `${ns}/${id}`;
/** How long Delete waits for the shim's /tasks/delete to be forwarded (see ./forwarded). */
const DELETE_EVENT_WAIT_MS = 500;

export class ShimManager {
  private readonly tasks = new Map<string, ShimTask>();
  private readonly reserved = new Set<string>();
  private readonly dead = new Map<string, Promise<ExitInfo>>();

  constructor(private readonly o: ManagerOptions) {}

  private env(ns: string, id: string): ShimEnv {
    return { namespace: ns, id, address: this.o.address, ttrpcAddress: this.o.ttrpcAddress, publishBinary: this.o.publishBinary, debug: this.o.debug };
  }

  /** Start a shim for `container` and create its task; returns the init pid. */
  async create(ctx: CallContext, container: Container, input: CreateTaskInput): Promise<number> {
    const ns = namespaceRequired(ctx);
    const id = container.id;
    const k = key(ns, id);
    if (this.tasks.has(k) || this.reserved.has(k)) throw errAlreadyExists(`task ${id}`);
    this.reserved.add(k);
    try {
      let cmd: ShimCommand;
      try {
        cmd = this.o.resolver.resolve(input.runtimePath || container.runtime.name);
      } catch (e) {
        throw wrap(e, "failed to start shim");
      }
      if (!container.spec) throw new FlotillaError(ErrorCodes.InvalidArgument, `container ${id} has no spec: invalid argument`);
      await this.dead.get(k)?.catch(() => undefined);
      let bundle: Bundle;
      try {
        bundle = Bundle.create(this.o.dirs, ns, id, container.spec.value);
      } catch (e) {
        throw wrap(e, "failed to start shim");
      }
      try {
        const options = input.options ?? container.runtime.options;
        const t0 = performance.now();
        const laps: Record<string, number> = {};
        let tl = t0;
        const lap = (k: string): void => {
          const n = performance.now();
          laps[k] = Math.round((n - tl) * 10) / 10;
          tl = n;
        };
        let boot: BootstrapResult;
        const group = groupOf(container.spec.value, container);
        if (group) bundle.write(GROUP_FILE, group);
        const endpoint = input.taskApiAddress ? taskApiEndpoint(input.taskApiAddress, input.taskApiVersion) : undefined;
        const host = endpoint || !cmd.builtin ? undefined : this.hostFor(ns, cmd, group);
        const warm = endpoint || host ? undefined : await this.o.warm?.take(cmd);
        lap("take");
        if (endpoint) {
          // The shim already runs (a sandbox's): the task joins it, as containerd reuses a sandbox's endpoint.
          boot = endpoint;
          if (container.sandbox) bundle.write("sandbox", container.sandbox);
        } else if (host?.boot) {
          boot = host.boot;
        } else if (warm) {
          boot = { version: 3, address: warm.address, protocol: "ttrpc" };
        } else {
          try {
            boot = await shimStart(cmd, bundle.path, this.env(ns, id), options);
          } catch (e) {
            await shimDelete(cmd, bundle.path, this.env(ns, id)).catch(() => undefined);
            throw wrap(e, "failed to start shim: start failed");
          }
        }
        bundle.write("bootstrap.json", JSON.stringify(boot));
        bundle.write("shim-binary-path", cmd.binaryPath);
        if (!bundle.read("address")) bundle.write("address", boot.address);
        lap("write");
        const shim = await ShimTask.connect(ns, id, bundle, cmd, boot, this.o.log, (t) => this.onClosed(t), 10_000, warm).catch(async (e: unknown) => {
          await shimDelete(cmd, bundle.path, this.env(ns, id)).catch(() => undefined);
          throw wrap(e, "failed to start shim");
        });
        shim.group = group;
        // A member joining a pool shim lets the pod's last member hand the shim back to the pool.
        if (host?.pooled) shim.pooled = true;
        const task = shim.withTrace(ctx.trace);
        lap("connect");
        const t1 = performance.now();
        try {
          const r = await task.call("Create", {
            bundle: bundle.path,
            rootfs: input.rootfs.map(mountToProto),
            terminal: input.io.terminal,
            stdin: input.io.stdin,
            stdout: input.io.stdout,
            stderr: input.io.stderr,
            checkpoint: "",
            options: options ? { type_url: options.typeUrl, value: Buffer.from(options.value) } : null,
          });
          this.tasks.set(k, shim);
          this.o.log.debug({ id, namespace: ns, shimMs: Math.round(t1 - t0), createMs: Math.round(performance.now() - t1), laps }, "task created");
          return Number(r.pid ?? 0);
        } catch (e) {
          shim.closing = true;
          await task.call("Delete", {}, 5000).catch(() => undefined);
          await task.call("Shutdown", {}, 3000).catch(() => undefined);
          shim.close();
          throw wrap(e, "failed to create shim task");
        } finally {
          if (warm) this.o.warm?.settled(cmd);
        }
      } catch (e) {
        bundle.delete();
        throw e;
      }
    } finally {
      this.reserved.delete(k);
    }
  }

  /**
   * A running Flotilla shim a new task may join: the one serving its group, or (with
   * `shimGroupSize` > 1) one in the namespace serving fewer tasks than that.
   */
  private hostFor(ns: string, cmd: ShimCommand, group: string): ShimTask | undefined {
    const size = this.o.shimGroupSize ?? 1;
    if (!group && size <= 1) return undefined;
    const byAddress = new Map<string, ShimTask[]>();
    for (const t of this.tasks.values()) {
      if (t.namespace !== ns || !t.boot || t.cmd.binaryPath !== cmd.binaryPath || JSON.stringify(t.cmd.env) !== JSON.stringify(cmd.env)) continue;
      if (!t.client.isOpen) continue;
      const list = byAddress.get(t.boot.address) ?? [];
      list.push(t);
      byAddress.set(t.boot.address, list);
    }
    for (const list of byAddress.values()) {
      if (group) {
        if (list.some((t) => t.group === group)) return list[0];
        continue;
      }
      if (list.every((t) => !t.group) && list.length < size) return list[0];
    }
    return undefined;
  }

  /** The task; NotFound ("task <id> not found") when there is none. */
  get(ns: string, id: string): ShimTask {
    const t = this.tasks.get(key(ns, id));
    if (!t) throw taskNotFound(id);
    return t;
  }

  has(ns: string, id: string): boolean {
    return this.tasks.has(key(ns, id));
  }

  list(ns: string): ShimTask[] {
    return [...this.tasks.values()].filter((t) => t.namespace === ns);
  }

  /** The exit of a task whose shim died, once its cleanup ran (for Wait calls cut off by the drop). */
  deadExit(ns: string, id: string): Promise<ExitInfo> | undefined {
    return this.dead.get(key(ns, id));
  }

  /** Delete the task in its shim, shut the shim down, remove the bundle. `trace`: the calling request's (its events carry it). */
  async delete(ns: string, id: string, trace?: Context): Promise<ExitInfo> {
    const k = key(ns, id);
    const t = this.get(ns, id);
    let resp: Record<string, unknown> | undefined;
    const d0 = performance.now();
    const published = this.o.forwardedDeletes?.expect(ns, id);
    try {
      resp = await (trace ? t.withTrace(trace) : t).call("Delete", {}, 30_000);
      await published?.wait(DELETE_EVENT_WAIT_MS);
    } catch (e) {
      published?.cancel();
      if (isClosedError(e)) {
        const d = this.dead.get(k);
        if (d) return d;
      }
      if (!isClosedError(e) && !isNotFound(e)) throw wrap(e, "failed to delete task");
    }
    this.tasks.delete(k);
    t.closing = true;
    const d1 = performance.now();
    // The shim goes back to the warm pool, or exits once it has no task left; nothing here waits.
    void this.release(t);
    t.bundle.delete();
    this.o.log.debug({ id, deleteMs: Math.round(d1 - d0), bundleMs: Math.round(performance.now() - d1) }, "task deleted");
    const at = resp?.exited_at as { seconds: number; nanos: number } | null | undefined;
    return {
      pid: Number(resp?.pid ?? 0),
      exitStatus: Number(resp?.exit_status ?? 0),
      exitedAt: fromTimestamp(at) ?? new Date(0),
    };
  }

  /**
   * After its task was deleted: a shim still serving other members of its group only loses this
   * connection; one serving nothing else goes back to the pool (a pool shim) or shuts down.
   */
  private async release(t: ShimTask): Promise<void> {
    if (t.boot && [...this.tasks.values()].some((x) => x.boot?.address === t.boot?.address)) {
      t.close();
      return;
    }
    if (t.pooled && t.boot && this.o.warm?.enabled) {
      try {
        await t.client.call(POOL_SERVICE, "Release", Buffer.alloc(0), { timeoutMs: 3000 });
        t.shimLog.close();
        if (this.o.warm.giveBack(t.cmd, { client: t.client, address: t.boot.address, pid: t.shimPid })) return;
      } catch (e) {
        this.o.log.debug({ id: t.id, err: (e as Error).message }, "shim not recycled");
      }
    }
    await t.call("Shutdown", {}, 3000).catch(() => undefined);
    t.close();
  }

  /** A connection dropped without us closing it: the shim is gone. */
  private onClosed(t: ShimTask): void {
    if (t.closing) return;
    const k = key(t.namespace, t.id);
    if (this.tasks.get(k) !== t) return;
    this.o.log.warn({ id: t.id, namespace: t.namespace }, "shim disconnected; cleaning up after it");
    t.shimLog.close();
    const done = this.cleanupDead(t.namespace, t.id, t.bundle, t.cmd).finally(() => {
      if (this.tasks.get(k) === t) this.tasks.delete(k);
      setTimeout(() => {
        if (this.dead.get(k) === done) this.dead.delete(k);
      }, 60_000).unref();
    });
    this.dead.set(k, done);
  }

  /** `shim delete`, /tasks/exit and /tasks/delete (status 255 when delete failed), remove the bundle. */
  private async cleanupDead(ns: string, id: string, bundle: Bundle, cmd: ShimCommand | undefined): Promise<ExitInfo> {
    let exit: ExitInfo = { pid: 0, exitStatus: 255, exitedAt: now() };
    if (cmd) {
      try {
        exit = await shimDelete(cmd, bundle.path, this.env(ns, id));
      } catch (e) {
        this.o.log.warn({ id, namespace: ns, err: (e as Error).message }, "failed to clean up after shim disconnected");
      }
    }
    const ctx = background(ns);
    const ts = toTimestamp(exit.exitedAt);
    await this.o.events.publish(ctx, TASK_EVENTS.exit.topic, TASK_EVENTS.exit.type, { container_id: id, id, pid: exit.pid, exit_status: exit.exitStatus, exited_at: ts });
    await this.o.events.publish(ctx, TASK_EVENTS.delete.topic, TASK_EVENTS.delete.type, { container_id: id, pid: exit.pid, exit_status: exit.exitStatus, exited_at: ts, id: "" });
    bundle.delete();
    return exit;
  }

  /** Reconnect to the shims that outlived the previous tasks process; clean up the dead ones. */
  async loadExisting(): Promise<{ loaded: number; cleaned: number }> {
    let loaded = 0;
    let cleaned = 0;
    await Promise.all(listBundles(this.o.dirs).map(async ({ namespace: ns, id }) => {
      const bundle = new Bundle(this.o.dirs, ns, id);
      let entries: string[] = [];
      try {
        entries = fs.readdirSync(bundle.path);
      } catch {
        return;
      }
      if (entries.length === 0) {
        fs.rmSync(bundle.path, { recursive: true, force: true });
        return;
      }
      let cmd: ShimCommand | undefined;
      try {
        const bin = bundle.read("shim-binary-path")?.trim();
        if (bin) cmd = this.o.resolver.fromBinaryPath(bin);
        else {
          const rt = await this.o.runtimeOf?.(ns, id);
          if (rt) cmd = this.o.resolver.resolve(rt);
        }
      } catch {
        cmd = undefined;
      }
      const bootText = bundle.read("bootstrap.json");
      const address = bundle.read("address")?.trim();
      const boot: BootstrapResult | undefined = bootText ? (JSON.parse(bootText) as BootstrapResult) : address ? { version: 2, address, protocol: "ttrpc" } : undefined;
      if (boot && cmd) {
        try {
          const t = await ShimTask.connect(ns, id, bundle, cmd, boot, this.o.log, (x) => this.onClosed(x), 1000);
          try {
            t.group = bundle.read(GROUP_FILE) ?? groupOf(fs.readFileSync(bundle.file("config.json")));
          } catch {
            t.group = "";
          }
          try {
            await t.call("State", {}, 5000);
            this.tasks.set(key(ns, id), t);
            loaded++;
            return;
          } catch (e) {
            this.o.log.warn({ id, namespace: ns, err: (e as Error).message }, "shim does not know its task; cleaning up");
            t.closing = true;
            await t.call("Shutdown", {}, 3000).catch(() => undefined);
            t.close();
          }
        } catch (e) {
          this.o.log.warn({ id, namespace: ns, err: (e as Error).message }, "shim unreachable after restart; cleaning up");
        }
      }
      cleaned++;
      const done = this.cleanupDead(ns, id, bundle, cmd);
      this.dead.set(key(ns, id), done);
      await done.catch(() => undefined);
    }));
    this.removeOrphanWorkdirs();
    return { loaded, cleaned };
  }

  private removeOrphanWorkdirs(): void {
    let nss: string[] = [];
    try {
      nss = fs.readdirSync(this.o.dirs.root);
    } catch {
      return;
    }
    for (const ns of nss) {
      let ids: string[] = [];
      try {
        ids = fs.readdirSync(path.join(this.o.dirs.root, ns));
      } catch {
        continue;
      }
      for (const id of ids) if (!this.tasks.has(key(ns, id))) fs.rmSync(path.join(this.o.dirs.root, ns, id), { recursive: true, force: true });
    }
  }

  /** Close every connection on purpose (the shims keep running; idle warm shims exit). */
  close(): void {
    this.o.warm?.close();
    for (const t of this.tasks.values()) t.close();
  }
}
