/**
 * What the podsandbox controller needs from the tasks process (containers + tasks), and its
 * implementation over containerd's Containers and Tasks gRPC APIs (the same request shapes any
 * containerd client sends), addressed straight to the tasks process.
 */
import type { CallContext } from "../../../../../libs/context";
import { errNotFound } from "../../../../../libs/errdefs";
import { RpcClient, type ChannelPool } from "../../../../../libs/grpc/client";
import type { Msg } from "../../../../../libs/grpc/server";
import { fromTimestamp } from "../../../../../libs/proto";
import type { Mount } from "../../../../../libs/core/snapshots";
import { OCI_SPEC_TYPE_URL, type TypedValue } from "../../../../../libs/core/sandbox";
import { anyFromProto, mountToProto } from "../../../../../libs/clients/sandbox";
import { now as nowDate } from "../../../../../libs/time";

export const TaskStatus = { Unknown: 0, Created: 1, Running: 2, Stopped: 3, Paused: 4, Pausing: 5 } as const;

export interface ContainerSpec {
  id: string;
  labels: Record<string, string>;
  runtime: string;
  /** The OCI runtime spec, sent as JSON in an Any. */
  spec: Record<string, unknown>;
  sandbox: string;
}

export interface ContainerRecord {
  id: string;
  labels: Record<string, string>;
  sandbox: string;
  snapshotter: string;
  snapshotKey: string;
}

export interface TaskState {
  pid: number;
  status: number;
  exitStatus: number;
  exitedAt?: Date;
}

export interface TaskExit {
  exitStatus: number;
  exitedAt: Date;
}

export interface PodTasks {
  createContainer(ctx: CallContext, c: ContainerSpec): Promise<void>;
  /** NotFound when absent. */
  deleteContainer(ctx: CallContext, id: string): Promise<void>;
  listContainers(ctx: CallContext): Promise<ContainerRecord[]>;
  createTask(ctx: CallContext, id: string, rootfs: Mount[]): Promise<number>;
  startTask(ctx: CallContext, id: string): Promise<number>;
  /** NotFound when there is no task. */
  getTask(ctx: CallContext, id: string): Promise<TaskState>;
  killTask(ctx: CallContext, id: string, signal: number, all?: boolean): Promise<void>;
  waitTask(ctx: CallContext, id: string): Promise<TaskExit>;
  deleteTask(ctx: CallContext, id: string): Promise<TaskExit>;
  /** The task's metric (NotFound when none). */
  metrics(ctx: CallContext, id: string): Promise<{ timestamp: Date; data?: TypedValue }>;
  removeSnapshot(ctx: CallContext, snapshotter: string, key: string): Promise<void>;
}



export class PodTasksGrpc implements PodTasks {
  private readonly containers: RpcClient;
  private readonly tasks: RpcClient;
  private readonly snapshots: RpcClient;

  constructor(tasksAddress: string, snapshotsAddress: string, channels: ChannelPool) {
    this.containers = new RpcClient(channels.get(tasksAddress), "containerd.services.containers.v1.Containers");
    this.tasks = new RpcClient(channels.get(tasksAddress), "containerd.services.tasks.v1.Tasks");
    this.snapshots = new RpcClient(channels.get(snapshotsAddress), "containerd.services.snapshots.v1.Snapshots");
  }

  async createContainer(ctx: CallContext, c: ContainerSpec): Promise<void> {
    await this.containers.unary(ctx, "Create", {
      container: {
        id: c.id,
        labels: c.labels,
        runtime: { name: c.runtime },
        spec: { type_url: OCI_SPEC_TYPE_URL, value: Buffer.from(JSON.stringify(c.spec)) },
        sandbox: c.sandbox,
      },
    });
  }

  async deleteContainer(ctx: CallContext, id: string): Promise<void> {
    await this.containers.unary(ctx, "Delete", { id });
  }

  async listContainers(ctx: CallContext): Promise<ContainerRecord[]> {
    const r = await this.containers.unary(ctx, "List", { filters: [] });
    return ((r.containers as Msg[] | undefined) ?? []).map((c) => ({
      id: String(c.id),
      labels: (c.labels as Record<string, string>) ?? {},
      sandbox: String(c.sandbox ?? ""),
      snapshotter: String(c.snapshotter ?? ""),
      snapshotKey: String(c.snapshot_key ?? ""),
    }));
  }

  async createTask(ctx: CallContext, id: string, rootfs: Mount[]): Promise<number> {
    const r = await this.tasks.unary(ctx, "Create", { container_id: id, rootfs: rootfs.map(mountToProto) });
    return Number(r.pid ?? 0);
  }

  async startTask(ctx: CallContext, id: string): Promise<number> {
    return Number((await this.tasks.unary(ctx, "Start", { container_id: id })).pid ?? 0);
  }

  async getTask(ctx: CallContext, id: string): Promise<TaskState> {
    const p = ((await this.tasks.unary(ctx, "Get", { container_id: id })).process ?? {}) as Msg;
    const st: TaskState = { pid: Number(p.pid ?? 0), status: Number(p.status ?? 0), exitStatus: Number(p.exit_status ?? 0) };
    const at = p.exited_at ? fromTimestamp(p.exited_at) : undefined;
    if (at && at.getTime() > 0) st.exitedAt = at;
    return st;
  }

  async killTask(ctx: CallContext, id: string, signal: number, all = false): Promise<void> {
    await this.tasks.unary(ctx, "Kill", { container_id: id, signal, all });
  }

  async waitTask(ctx: CallContext, id: string): Promise<TaskExit> {
    const r = await this.tasks.unary(ctx, "Wait", { container_id: id });
    return { exitStatus: Number(r.exit_status ?? 0), exitedAt: fromTimestamp(r.exited_at) ?? nowDate() };
  }

  async deleteTask(ctx: CallContext, id: string): Promise<TaskExit> {
    const r = await this.tasks.unary(ctx, "Delete", { container_id: id });
    return { exitStatus: Number(r.exit_status ?? 0), exitedAt: fromTimestamp(r.exited_at) ?? nowDate() };
  }

  async metrics(ctx: CallContext, id: string): Promise<{ timestamp: Date; data?: TypedValue }> {
    const r = await this.tasks.unary(ctx, "Metrics", { filters: [`id==${id}`] });
    const m = ((r.metrics as Msg[] | undefined) ?? []).find((x) => x.id === id);
    if (!m) throw errNotFound(`metrics of task ${JSON.stringify(id)}`);
    const data = anyFromProto(m.data);
    return { timestamp: fromTimestamp(m.timestamp) ?? nowDate(), ...(data ? { data } : {}) };
  }

  async removeSnapshot(ctx: CallContext, snapshotter: string, key: string): Promise<void> {
    await this.snapshots.unary(ctx, "Remove", { snapshotter, key });
  }
}
