/**
 * The `shim` controller (plugin io.containerd.sandbox.controller.v1.shim, containerd's
 * plugins/sandbox/controller.go): each sandbox is a shim started with the runtime v2 binary protocol
 * (`sandbox.runtime.name` picks the binary) and driven through its containerd.runtime.sandbox.v1.Sandbox
 * ttrpc API. Start returns the shim's task API endpoint (`<protocol>+<address>`, version) so the
 * containers of the sandbox are served by the same shim.
 *
 * Records (["shim", ns, id]) are written before the shim is started and after each change, so a
 * restart reconnects by address and an interrupted create is cleaned up (`<shim> delete`, bundle removed).
 */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as path from "node:path";
import type { Logger } from "pino";
import { background, type CallContext } from "#libs/context";
import { causeText, errFailedPrecondition } from "#libs/errdefs";
import { fromTimestamp } from "#libs/proto";
import { OCI_SPEC_TYPE_URL, SANDBOXERS } from "#libs/core/sandbox";
import type { ControllerInstance, ControllerStatus, SandboxController, SandboxCreateOptions, SandboxExitStatus, SandboxInput, SandboxMetric, SandboxPlatform } from "#libs/core/sandbox";
import { anyFromProto, anyToProto, metricFromProto } from "#libs/clients/sandbox";
import { mountToProto } from "#libs/mount";
import type { SandboxDB } from "../db";
import { fromStored, toStored } from "../store";
import { RecordedController, recordKey, type ControllerRecord } from "../controller-core";
import { deleteShim, resolveShim, startShim, type LaunchOptions, type ShimEndpoint } from "./launcher";
import { NAMESPACE_KEY, TtrpcClient } from "#libs/ttrpc";
import { TypedClient } from "#libs/ttrpc/typed";
import type { ClientRequest, ClientResponse, MethodOfKind } from "#libs/proto/types";
import { dateFromStored, now as nowDate } from "#libs/time";

export const SHIM_SANDBOX_SERVICE = "containerd.runtime.sandbox.v1.Sandbox";

export interface ShimRecord extends ControllerRecord {
  phase: "creating" | "created" | "running" | "stopped";
  bundle: string;
  binary: string;
  endpoint?: ShimEndpoint;
}

const SHIM_PREFIX = "shim";
export const shimKey = (ns: string, id: string): string[] => recordKey(SHIM_PREFIX, ns, id);

export interface ShimSandboxOptions {
  db: SandboxDB;
  /** Bundles live under `<state>/<ns>/<id>`. */
  state: string;
  /** Directories searched for shim binaries before $PATH. */
  shimDirs: string[];
  /** The daemon's gRPC address (the gateway) and the ttrpc address shims publish events to. */
  grpcAddress: string;
  ttrpcAddress: string;
  log: Logger;
  debug?: boolean;
  /** More environment for the shims started (see LaunchOptions.env). */
  shimEnv?: Record<string, string>;
}

export class ShimSandboxController extends RecordedController<ShimRecord> implements SandboxController {
  private readonly clients = new Map<string, Promise<TypedClient<typeof SHIM_SANDBOX_SERVICE>>>();
  private readonly logs = new Map<string, net.Socket>();

  constructor(private readonly o: ShimSandboxOptions) {
    super(o.db, SHIM_PREFIX, SANDBOXERS.shim);
  }

  /** The shim's Sandbox service, over one connection per shim address (redialled after it closes). */
  private client(rec: ShimRecord): Promise<TypedClient<typeof SHIM_SANDBOX_SERVICE>> {
    if (!rec.endpoint) throw errFailedPrecondition("sandbox shim has no address");
    if (rec.endpoint.protocol !== "ttrpc") throw errFailedPrecondition(`sandbox shim protocol ${rec.endpoint.protocol} is not supported`);
    const address = rec.endpoint.address;
    let c = this.clients.get(address);
    if (!c) {
      c = TtrpcClient.connect(address, { retryMs: 2000, onClose: () => this.clients.delete(address) }).then((t) => new TypedClient(t, SHIM_SANDBOX_SERVICE));
      c.catch(() => this.clients.delete(address));
      this.clients.set(address, c);
    }
    return c;
  }

  private async call<M extends MethodOfKind<typeof SHIM_SANDBOX_SERVICE, "unary">>(ctx: CallContext, rec: ShimRecord, method: M, req: ClientRequest<typeof SHIM_SANDBOX_SERVICE, M>): Promise<ClientResponse<typeof SHIM_SANDBOX_SERVICE, M>> {
    const c = await this.client(rec);
    return c.call(method, req, {
      metadata: ctx.namespace ? { [NAMESPACE_KEY]: [ctx.namespace] } : {},
      signal: ctx.signal,
      ...(ctx.deadline ? { timeoutMs: Math.max(1, ctx.deadline.getTime() - Date.now()) } : {}),
    });
  }

  private closeClient(address: string): void {
    const c = this.clients.get(address);
    this.clients.delete(address);
    void c?.then((t) => t.client.close(), () => undefined);
  }

  private launch(ns: string, id: string, rec: ShimRecord, options?: { typeUrl: string; value: Uint8Array }): LaunchOptions {
    return {
      binary: rec.binary,
      id,
      namespace: ns,
      bundle: rec.bundle,
      grpcAddress: this.o.grpcAddress,
      ttrpcAddress: this.o.ttrpcAddress,
      ...(options ? { options: { type_url: options.typeUrl, value: Buffer.from(options.value) } } : {}),
      ...(this.o.debug ? { debug: true } : {}),
      ...(this.o.shimEnv ? { env: this.o.shimEnv } : {}),
    };
  }

  /** The bundle's `log` FIFO (shims open it write-only); its lines go to our log. */
  private openLog(key: string, bundle: string, id: string): void {
    const p = path.join(bundle, "log");
    if (!fs.existsSync(p)) spawnSync("mkfifo", ["-m", "0700", p]);
    try {
      const s = new net.Socket({ fd: fs.openSync(p, fs.constants.O_RDWR | fs.constants.O_NONBLOCK), readable: true, writable: false });
      s.on("data", (b: Buffer) => this.o.log.debug({ sandbox: id, shim: b.toString().trimEnd() }, "shim log"));
      s.on("error", () => undefined);
      this.logs.get(key)?.destroy();
      this.logs.set(key, s);
    } catch (err) {
      this.o.log.warn({ err, sandbox: id }, "opening the shim log");
    }
  }

  private closeLog(key: string): void {
    this.logs.get(key)?.destroy();
    this.logs.delete(key);
  }

  async create(ctx: CallContext, input: SandboxInput, opts: SandboxCreateOptions = {}): Promise<void> {
    await this.createRecord(ctx, input, async (ns, sandbox, created) => {
      const id = sandbox.id;
      const binary = resolveShim(sandbox.runtime.name, this.o.shimDirs);
      const bundle = path.join(this.o.state, ns, id);
      const rec: ShimRecord = { phase: "creating", sandbox: toStored(sandbox), bundle, binary, created };
      await this.put(ns, id, rec);
      try {
        fs.mkdirSync(path.dirname(bundle), { recursive: true, mode: 0o711 });
        fs.mkdirSync(bundle, { recursive: false, mode: 0o700 });
        if (sandbox.spec && (sandbox.spec.typeUrl === OCI_SPEC_TYPE_URL || sandbox.spec.typeUrl.endsWith("/Spec"))) fs.writeFileSync(path.join(bundle, "config.json"), Buffer.from(sandbox.spec.value));
        this.openLog(`${ns}/${id}`, bundle, id);
        rec.endpoint = await startShim(this.launch(ns, id, rec, sandbox.runtime.options));
        await this.put(ns, id, rec);
        await this.call(ctx, rec, "CreateSandbox", {
          sandbox_id: id,
          bundle_path: bundle,
          rootfs: (opts.rootfs ?? []).map(mountToProto),
          options: anyToProto(opts.options),
          netns_path: opts.netnsPath ?? "",
          annotations: opts.annotations ?? {},
        });
      } catch (e) {
        await this.cleanup(ns, id, rec).catch((err: unknown) => this.o.log.warn({ err: causeText(err), sandbox: id }, "cleaning up a failed shim sandbox create"));
        throw e;
      }
      rec.phase = "created";
      await this.put(ns, id, rec);
    });
  }

  /** Ask the shim to go, run `<shim> delete`, remove the bundle and the record. */
  private async cleanup(ns: string, id: string, rec: ShimRecord): Promise<void> {
    if (rec.endpoint) {
      await this.call(background(ns), rec, "ShutdownSandbox", { sandbox_id: id }).catch(() => undefined);
      this.closeClient(rec.endpoint.address);
    }
    if (fs.existsSync(rec.bundle)) {
      await deleteShim(this.launch(ns, id, rec)).catch((err: unknown) => this.o.log.debug({ err: causeText(err), sandbox: id }, "shim delete"));
    }
    this.closeLog(`${ns}/${id}`);
    fs.rmSync(rec.bundle, { recursive: true, force: true });
    await this.remove(ns, id);
  }

  async start(ctx: CallContext, id: string): Promise<ControllerInstance> {
    return this.withRecord(ctx, id, async (ns, rec) => {
      this.requireCreated(id, rec);
      const r = await this.call(ctx, rec, "StartSandbox", { sandbox_id: id });
      rec.phase = "running";
      await this.put(ns, id, rec);
      const spec = anyFromProto(r.spec as Record<string, unknown> | null);
      return {
        sandboxId: id,
        pid: Number(r.pid ?? 0),
        createdAt: fromTimestamp(r.created_at as never) ?? dateFromStored(rec.created),
        labels: { ...fromStored(id, rec.sandbox).labels },
        ...taskApi(rec),
        ...(spec ? { spec } : {}),
      };
    });
  }

  async platform(ctx: CallContext, id: string): Promise<SandboxPlatform> {
    const r = await this.call(ctx, this.recordOf(ctx, id), "Platform", { sandbox_id: id });
    const p = (r.platform ?? {}) as Record<string, unknown>;
    return { os: String(p.os ?? ""), architecture: String(p.architecture ?? ""), variant: String(p.variant ?? "") };
  }

  async stop(ctx: CallContext, id: string, opts: { timeoutSecs?: number } = {}): Promise<void> {
    await this.withRecord(ctx, id, async (ns, rec) => {
      await this.call(ctx, rec, "StopSandbox", { sandbox_id: id, timeout_secs: opts.timeoutSecs ?? 0 });
      rec.phase = "stopped";
      await this.put(ns, id, rec);
    });
  }

  async wait(ctx: CallContext, id: string): Promise<SandboxExitStatus> {
    const r = await this.call(ctx, this.recordOf(ctx, id), "WaitSandbox", { sandbox_id: id });
    return { exitStatus: Number(r.exit_status ?? 0), exitedAt: fromTimestamp(r.exited_at as never) ?? nowDate() };
  }

  async status(ctx: CallContext, id: string, verbose = false): Promise<ControllerStatus> {
    const rec = this.recordOf(ctx, id);
    const r = await this.call(ctx, rec, "SandboxStatus", { sandbox_id: id, verbose });
    const out: ControllerStatus = {
      sandboxId: id,
      pid: Number(r.pid ?? 0),
      state: String(r.state ?? ""),
      info: { ...((r.info as Record<string, string> | undefined) ?? {}), phase: rec.phase },
      ...taskApi(rec),
    };
    const c = r.created_at ? fromTimestamp(r.created_at as never) : undefined;
    if (c && c.getTime() > 0) out.createdAt = c;
    const e = r.exited_at ? fromTimestamp(r.exited_at as never) : undefined;
    if (e && e.getTime() > 0) out.exitedAt = e;
    const extra = anyFromProto(r.extra as Record<string, unknown> | null);
    if (extra) out.extra = extra;
    return out;
  }

  async shutdown(ctx: CallContext, id: string): Promise<void> {
    await this.withRecord(ctx, id, async (ns, rec) => {
      await this.call(ctx, rec, "ShutdownSandbox", { sandbox_id: id }).catch((e: unknown) => {
        // A shim that is already gone has nothing left to shut down; `delete` below cleans up after it.
        if ((e as { code?: string }).code !== "unavailable") throw e;
      });
      await this.cleanup(ns, id, rec);
    });
  }

  async metrics(ctx: CallContext, id: string): Promise<SandboxMetric> {
    const r = await this.call(ctx, this.recordOf(ctx, id), "SandboxMetrics", { sandbox_id: id });
    return metricFromProto(r.metrics as Record<string, unknown> | null);
  }

  // update: no shim RPC exists for it (UpdateSandboxRequest is unused upstream); the record is updated (RecordedController).

  /** After a restart: reopen the shims' logs, clean up creates that were interrupted. */
  async recover(): Promise<void> {
    for (const { ns, id, rec } of this.records()) {
      if (rec.phase === "creating") {
        this.o.log.info({ sandbox: id, namespace: ns }, "cleaning up an interrupted shim sandbox create");
        await this.cleanup(ns, id, rec).catch((err: unknown) => this.o.log.warn({ err: causeText(err), sandbox: id }, "cleaning up an interrupted shim sandbox create"));
      } else if (fs.existsSync(rec.bundle)) {
        this.openLog(`${ns}/${id}`, rec.bundle, id);
      }
    }
  }

  close(): void {
    for (const a of [...this.clients.keys()]) this.closeClient(a);
    for (const s of this.logs.values()) s.destroy();
    this.logs.clear();
  }
}

/** The shim's task API, for the containers of the sandbox: `<protocol>+<address>` and its version. */
function taskApi(rec: ShimRecord): { address: string; version: number } {
  const ep = rec.endpoint;
  if (!ep) throw errFailedPrecondition("sandbox shim has no address");
  return { address: `${ep.protocol}+${ep.address}`, version: ep.version };
}
