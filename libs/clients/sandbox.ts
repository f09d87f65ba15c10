/**
 * Sandboxes over gRPC: `SandboxStoreProxy` (containerd.services.sandbox.v1.Store) and
 * `SandboxControllerProxy` (containerd.services.sandbox.v1.Controller, bound to one sandboxer), so
 * callers cannot tell them from the local implementations. Also the proto conversions the sandbox
 * process's gRPC adapters use. Errors arrive as native errdefs classes (the RpcClient maps them).
 */
import type { CallContext } from "../context";
import { RpcClient, type Channel } from "../grpc/client";
import type { Msg } from "../grpc/server";
import { fromTimestamp, toTimestamp } from "../proto";
import { mountToProto } from "../mount";
import { anyFromProto, anyToProto, recordFieldsFromProto, recordFieldsToProto, tsOrNull } from "./containers";
import type {
  ControllerInstance,
  ControllerStatus,
  Sandbox,
  SandboxController,
  SandboxCreateOptions,
  SandboxExitStatus,
  SandboxInput,
  SandboxMetric,
  SandboxPlatform,
  SandboxStore,
} from "../core/sandbox";
import type { Input } from "../proto/types";

export const SANDBOX_STORE_SERVICE = "containerd.services.sandbox.v1.Store";
export const SANDBOX_CONTROLLER_SERVICE = "containerd.services.sandbox.v1.Controller";

export { anyFromProto, anyToProto };

export function sandboxToProto(sb: SandboxInput & { createdAt?: Date; updatedAt?: Date }): Input["containerd.types.Sandbox"] {
  return { sandbox_id: sb.id, ...recordFieldsToProto(sb), sandboxer: sb.sandboxer ?? "" };
}

export function sandboxFromProto(m: Msg | null | undefined): Sandbox {
  return { id: String(m?.sandbox_id ?? ""), ...recordFieldsFromProto(m, false), sandboxer: String(m?.sandboxer ?? "") };
}

export function instanceToProto(i: ControllerInstance): Input["containerd.services.sandbox.v1.ControllerStartResponse"] {
  return {
    sandbox_id: i.sandboxId,
    pid: i.pid,
    created_at: tsOrNull(i.createdAt),
    labels: i.labels,
    address: i.address,
    version: i.version,
    spec: anyToProto(i.spec),
  };
}

export function instanceFromProto(m: Msg): ControllerInstance {
  const out: ControllerInstance = {
    sandboxId: String(m.sandbox_id ?? ""),
    pid: Number(m.pid ?? 0),
    createdAt: fromTimestamp(m.created_at) ?? new Date(0),
    labels: (m.labels as Record<string, string> | undefined) ?? {},
    address: String(m.address ?? ""),
    version: Number(m.version ?? 0),
  };
  const spec = anyFromProto(m.spec);
  if (spec) out.spec = spec;
  return out;
}

export function statusToProto(s: ControllerStatus): Input["containerd.services.sandbox.v1.ControllerStatusResponse"] {
  return {
    sandbox_id: s.sandboxId,
    pid: s.pid,
    state: s.state,
    info: s.info,
    created_at: tsOrNull(s.createdAt),
    exited_at: tsOrNull(s.exitedAt),
    extra: anyToProto(s.extra),
    address: s.address,
    version: s.version,
  };
}

export function statusFromProto(m: Msg): ControllerStatus {
  const out: ControllerStatus = {
    sandboxId: String(m.sandbox_id ?? ""),
    pid: Number(m.pid ?? 0),
    state: String(m.state ?? ""),
    info: (m.info as Record<string, string> | undefined) ?? {},
    address: String(m.address ?? ""),
    version: Number(m.version ?? 0),
  };
  const c = m.created_at ? fromTimestamp(m.created_at) : undefined;
  if (c) out.createdAt = c;
  const e = m.exited_at ? fromTimestamp(m.exited_at) : undefined;
  if (e) out.exitedAt = e;
  const extra = anyFromProto(m.extra);
  if (extra) out.extra = extra;
  return out;
}

export function metricToProto(x: SandboxMetric): Input["containerd.types.Metric"] {
  return { timestamp: toTimestamp(x.timestamp), id: x.id, data: anyToProto(x.data) };
}

export function metricFromProto(m: Msg | null | undefined): SandboxMetric {
  const out: SandboxMetric = { timestamp: fromTimestamp(m?.timestamp) ?? new Date(0), id: String(m?.id ?? "") };
  const d = anyFromProto(m?.data);
  if (d) out.data = d;
  return out;
}

export class SandboxStoreProxy implements SandboxStore {
  private readonly rpc: RpcClient<typeof SANDBOX_STORE_SERVICE>;
  constructor(channel: Channel) {
    this.rpc = new RpcClient(channel, SANDBOX_STORE_SERVICE);
  }
  /** Resolve once the owning process answers (a connection is up), or reject after `ms`. */
  waitForReady(ms: number): Promise<void> {
    return this.rpc.waitForReady(ms);
  }
  async create(ctx: CallContext, sandbox: SandboxInput): Promise<Sandbox> {
    return sandboxFromProto((await this.rpc.unary(ctx, "Create", { sandbox: sandboxToProto(sandbox) })).sandbox);
  }
  async update(ctx: CallContext, sandbox: SandboxInput, fields: readonly string[] = []): Promise<Sandbox> {
    return sandboxFromProto((await this.rpc.unary(ctx, "Update", { sandbox: sandboxToProto(sandbox), fields: [...fields] })).sandbox);
  }
  async get(ctx: CallContext, id: string): Promise<Sandbox> {
    return sandboxFromProto((await this.rpc.unary(ctx, "Get", { sandbox_id: id })).sandbox);
  }
  async list(ctx: CallContext, filters: readonly string[] = []): Promise<Sandbox[]> {
    return (((await this.rpc.unary(ctx, "List", { filters: [...filters] })).list as Msg[] | undefined) ?? []).map(sandboxFromProto);
  }
  async delete(ctx: CallContext, id: string): Promise<void> {
    await this.rpc.unary(ctx, "Delete", { sandbox_id: id });
  }
}

/** One sandboxer's controller over gRPC (containerd's `client.SandboxController(name)`). */
export class SandboxControllerProxy implements SandboxController {
  private readonly rpc: RpcClient<typeof SANDBOX_CONTROLLER_SERVICE>;
  constructor(channel: Channel, readonly sandboxer: string) {
    this.rpc = new RpcClient(channel, SANDBOX_CONTROLLER_SERVICE);
  }
  async create(ctx: CallContext, sandbox: SandboxInput, opts: SandboxCreateOptions = {}): Promise<void> {
    await this.rpc.unary(ctx, "Create", {
      sandbox_id: sandbox.id,
      rootfs: (opts.rootfs ?? []).map(mountToProto),
      options: anyToProto(opts.options),
      netns_path: opts.netnsPath ?? "",
      annotations: opts.annotations ?? {},
      sandbox: sandboxToProto(sandbox),
      sandboxer: this.sandboxer,
    });
  }
  async start(ctx: CallContext, id: string): Promise<ControllerInstance> {
    return instanceFromProto(await this.rpc.unary(ctx, "Start", { sandbox_id: id, sandboxer: this.sandboxer }));
  }
  async platform(ctx: CallContext, id: string): Promise<SandboxPlatform> {
    const p = (await this.rpc.unary(ctx, "Platform", { sandbox_id: id, sandboxer: this.sandboxer })).platform as Msg | null;
    return { os: String(p?.os ?? ""), architecture: String(p?.architecture ?? ""), variant: String(p?.variant ?? "") };
  }
  async stop(ctx: CallContext, id: string, opts: { timeoutSecs?: number } = {}): Promise<void> {
    await this.rpc.unary(ctx, "Stop", { sandbox_id: id, timeout_secs: opts.timeoutSecs ?? 0, sandboxer: this.sandboxer });
  }
  async wait(ctx: CallContext, id: string): Promise<SandboxExitStatus> {
    const r = await this.rpc.unary(ctx, "Wait", { sandbox_id: id, sandboxer: this.sandboxer });
    return { exitStatus: Number(r.exit_status ?? 0), exitedAt: fromTimestamp(r.exited_at) ?? new Date(0) };
  }
  async status(ctx: CallContext, id: string, verbose = false): Promise<ControllerStatus> {
    return statusFromProto(await this.rpc.unary(ctx, "Status", { sandbox_id: id, verbose, sandboxer: this.sandboxer }));
  }
  async shutdown(ctx: CallContext, id: string): Promise<void> {
    await this.rpc.unary(ctx, "Shutdown", { sandbox_id: id, sandboxer: this.sandboxer });
  }
  async metrics(ctx: CallContext, id: string): Promise<SandboxMetric> {
    return metricFromProto((await this.rpc.unary(ctx, "Metrics", { sandbox_id: id, sandboxer: this.sandboxer })).metrics);
  }
  async update(ctx: CallContext, id: string, sandbox: SandboxInput, fields: readonly string[] = []): Promise<void> {
    await this.rpc.unary(ctx, "Update", { sandbox_id: id, sandboxer: this.sandboxer, sandbox: sandboxToProto(sandbox), fields: [...fields] });
  }
}
