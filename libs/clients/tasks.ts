/**
 * TaskService over gRPC (containerd.services.tasks.v1.Tasks), so callers cannot tell it from the local
 * service in the tasks process. Errors arrive as native errdefs classes (the RpcClient maps them).
 */
import type { CallContext } from "../context";
import { RpcClient, type Channel } from "../grpc/client";
import type { Msg } from "../grpc/server";
import { fromTimestamp } from "../proto";
import type { TypedValue } from "../core/containers";
import type { CreateTaskInput, Descriptor, ExitInfo, ProcessInfo, ProcessState, TaskIO, TaskMetric, TaskService, TaskStatus } from "../core/tasks";
import { anyFromProto, anyToProto } from "./containers";
import { mountToProto } from "../mount";

export const TASKS_SERVICE = "containerd.services.tasks.v1.Tasks";

function exitFromProto(r: Msg): ExitInfo {
  return { pid: Number(r.pid ?? 0), exitStatus: Number(r.exit_status ?? 0), exitedAt: fromTimestamp(r.exited_at) ?? new Date(0) };
}

export function processFromProto(p: Msg | null | undefined): ProcessState {
  const at = fromTimestamp(p?.exited_at);
  return {
    id: String(p?.id ?? ""),
    pid: Number(p?.pid ?? 0),
    status: Number(p?.status ?? 0) as TaskStatus,
    stdin: String(p?.stdin ?? ""),
    stdout: String(p?.stdout ?? ""),
    stderr: String(p?.stderr ?? ""),
    terminal: Boolean(p?.terminal),
    exitStatus: Number(p?.exit_status ?? 0),
    ...(at && at.getTime() > 0 ? { exitedAt: at } : {}),
  };
}

export class TaskServiceProxy implements TaskService {
  private readonly rpc: RpcClient<typeof TASKS_SERVICE>;

  constructor(channel: Channel) {
    this.rpc = new RpcClient(channel, TASKS_SERVICE);
  }

  async create(ctx: CallContext, i: CreateTaskInput): Promise<number> {
    const r = await this.rpc.unary(ctx, "Create", {
      container_id: i.containerId,
      rootfs: i.rootfs.map(mountToProto),
      stdin: i.io.stdin,
      stdout: i.io.stdout,
      stderr: i.io.stderr,
      terminal: i.io.terminal,
      checkpoint: i.checkpoint ? { media_type: i.checkpoint.mediaType, digest: i.checkpoint.digest, size: i.checkpoint.size, annotations: i.checkpoint.annotations ?? {} } : null,
      options: anyToProto(i.options),
      runtime_path: i.runtimePath ?? "",
      task_api_address: i.taskApiAddress ?? "",
      task_api_version: i.taskApiVersion ?? 0,
    });
    return Number(r.pid ?? 0);
  }

  async start(ctx: CallContext, containerId: string, execId = ""): Promise<number> {
    return Number((await this.rpc.unary(ctx, "Start", { container_id: containerId, exec_id: execId })).pid ?? 0);
  }

  async delete(ctx: CallContext, containerId: string): Promise<ExitInfo> {
    return exitFromProto(await this.rpc.unary(ctx, "Delete", { container_id: containerId }));
  }

  async deleteProcess(ctx: CallContext, containerId: string, execId: string): Promise<ExitInfo> {
    return exitFromProto(await this.rpc.unary(ctx, "DeleteProcess", { container_id: containerId, exec_id: execId }));
  }

  async get(ctx: CallContext, containerId: string, execId = ""): Promise<ProcessState> {
    return processFromProto((await this.rpc.unary(ctx, "Get", { container_id: containerId, exec_id: execId })).process);
  }

  async list(ctx: CallContext): Promise<ProcessState[]> {
    return ((await this.rpc.unary(ctx, "List", {})).tasks as Msg[] | undefined ?? []).map(processFromProto);
  }

  async kill(ctx: CallContext, containerId: string, signal: number, opts: { execId?: string; all?: boolean } = {}): Promise<void> {
    await this.rpc.unary(ctx, "Kill", { container_id: containerId, exec_id: opts.execId ?? "", signal, all: !!opts.all });
  }

  async exec(ctx: CallContext, containerId: string, execId: string, io: TaskIO, spec: TypedValue): Promise<void> {
    await this.rpc.unary(ctx, "Exec", { container_id: containerId, exec_id: execId, stdin: io.stdin, stdout: io.stdout, stderr: io.stderr, terminal: io.terminal, spec: anyToProto(spec) });
  }

  async resizePty(ctx: CallContext, containerId: string, execId: string, width: number, height: number): Promise<void> {
    await this.rpc.unary(ctx, "ResizePty", { container_id: containerId, exec_id: execId, width, height });
  }

  async closeIO(ctx: CallContext, containerId: string, execId: string, stdin: boolean): Promise<void> {
    await this.rpc.unary(ctx, "CloseIO", { container_id: containerId, exec_id: execId, stdin });
  }

  async pause(ctx: CallContext, containerId: string): Promise<void> {
    await this.rpc.unary(ctx, "Pause", { container_id: containerId });
  }

  async resume(ctx: CallContext, containerId: string): Promise<void> {
    await this.rpc.unary(ctx, "Resume", { container_id: containerId });
  }

  async listPids(ctx: CallContext, containerId: string): Promise<ProcessInfo[]> {
    const r = await this.rpc.unary(ctx, "ListPids", { container_id: containerId });
    return ((r.processes as Msg[] | undefined) ?? []).map((p) => {
      const info = anyFromProto(p.info);
      return { pid: Number(p.pid ?? 0), ...(info ? { info } : {}) };
    });
  }

  async checkpoint(ctx: CallContext, containerId: string, opts: { parentCheckpoint?: string; options?: TypedValue }): Promise<Descriptor[]> {
    const r = await this.rpc.unary(ctx, "Checkpoint", { container_id: containerId, parent_checkpoint: opts.parentCheckpoint ?? "", options: anyToProto(opts.options) });
    return ((r.descriptors as Msg[] | undefined) ?? []).map((d) => ({ mediaType: String(d.media_type ?? ""), digest: String(d.digest ?? ""), size: Number(d.size ?? 0), annotations: (d.annotations as Record<string, string>) ?? {} }));
  }

  async update(ctx: CallContext, containerId: string, resources?: TypedValue, annotations: Record<string, string> = {}): Promise<void> {
    await this.rpc.unary(ctx, "Update", { container_id: containerId, resources: anyToProto(resources), annotations });
  }

  async metrics(ctx: CallContext, filters: readonly string[] = []): Promise<TaskMetric[]> {
    const r = await this.rpc.unary(ctx, "Metrics", { filters: [...filters] });
    return ((r.metrics as Msg[] | undefined) ?? []).map((m) => {
      const data = anyFromProto(m.data);
      return { id: String(m.id ?? ""), timestamp: fromTimestamp(m.timestamp) ?? new Date(0), ...(data ? { data } : {}) };
    });
  }

  async wait(ctx: CallContext, containerId: string, execId = ""): Promise<ExitInfo> {
    const r = await this.rpc.unary(ctx, "Wait", { container_id: containerId, exec_id: execId });
    return { pid: 0, exitStatus: Number(r.exit_status ?? 0), exitedAt: fromTimestamp(r.exited_at) ?? new Date(0) };
  }
}
