/**
 * What the podsandbox controller needs from the tasks process (containers + tasks) and the snapshots
 * process, and its implementation over their clients in libs/clients (containerd's Containers, Tasks
 * and Snapshots APIs, the same requests any containerd client sends).
 */
import type { CallContext } from "#libs/context";
import { errNotFound } from "#libs/errdefs";
import type { ChannelPool } from "#libs/grpc/client";
import type { Mount } from "#libs/core/snapshots";
import { OCI_SPEC_TYPE_URL, type Container } from "#libs/core/containers";
import type { ExitInfo, ProcessState, TaskMetric } from "#libs/core/tasks";
import { ContainerStoreProxy } from "#libs/clients/containers";
import { TaskServiceProxy } from "#libs/clients/tasks";
import { SnapshotterSetProxy } from "#libs/clients/snapshots";
import { now as nowDate } from "#libs/time";

export interface ContainerSpec extends Pick<Container, "id" | "labels" | "sandbox"> {
  /** The runtime name. */
  runtime: string;
  /** The OCI runtime spec, sent as JSON in an Any. */
  spec: Record<string, unknown>;
}

export type ContainerRecord = Pick<Container, "id" | "labels" | "sandbox" | "snapshotter" | "snapshotKey">;

export type TaskState = Pick<ProcessState, "pid" | "status" | "exitStatus" | "exitedAt">;

export type TaskExit = Omit<ExitInfo, "pid">;

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
  metrics(ctx: CallContext, id: string): Promise<Omit<TaskMetric, "id">>;
  removeSnapshot(ctx: CallContext, snapshotter: string, key: string): Promise<void>;
}

/** An exit as the controller records it: a missing time (the zero time on the wire) reads as now. */
const exitOf = (e: ExitInfo): TaskExit => ({ exitStatus: e.exitStatus, exitedAt: e.exitedAt.getTime() > 0 ? e.exitedAt : nowDate() });

export class PodTasksGrpc implements PodTasks {
  private readonly containers: ContainerStoreProxy;
  private readonly tasks: TaskServiceProxy;
  private readonly snapshots: SnapshotterSetProxy;

  constructor(tasksAddress: string, snapshotsAddress: string, channels: ChannelPool) {
    this.containers = new ContainerStoreProxy(channels.get(tasksAddress));
    this.tasks = new TaskServiceProxy(channels.get(tasksAddress));
    this.snapshots = new SnapshotterSetProxy(channels.get(snapshotsAddress));
  }

  async createContainer(ctx: CallContext, c: ContainerSpec): Promise<void> {
    await this.containers.create(ctx, {
      id: c.id,
      labels: c.labels,
      runtime: { name: c.runtime },
      spec: { typeUrl: OCI_SPEC_TYPE_URL, value: Buffer.from(JSON.stringify(c.spec)) },
      sandbox: c.sandbox,
    });
  }

  async deleteContainer(ctx: CallContext, id: string): Promise<void> {
    await this.containers.delete(ctx, id);
  }

  async listContainers(ctx: CallContext): Promise<ContainerRecord[]> {
    return (await this.containers.list(ctx)).map(({ id, labels, sandbox, snapshotter, snapshotKey }) => ({ id, labels, sandbox, snapshotter, snapshotKey }));
  }

  createTask(ctx: CallContext, id: string, rootfs: Mount[]): Promise<number> {
    return this.tasks.create(ctx, { containerId: id, rootfs, io: { stdin: "", stdout: "", stderr: "", terminal: false } });
  }

  startTask(ctx: CallContext, id: string): Promise<number> {
    return this.tasks.start(ctx, id);
  }

  async getTask(ctx: CallContext, id: string): Promise<TaskState> {
    const { pid, status, exitStatus, exitedAt } = await this.tasks.get(ctx, id);
    return { pid, status, exitStatus, ...(exitedAt ? { exitedAt } : {}) };
  }

  async killTask(ctx: CallContext, id: string, signal: number, all = false): Promise<void> {
    await this.tasks.kill(ctx, id, signal, { all });
  }

  async waitTask(ctx: CallContext, id: string): Promise<TaskExit> {
    return exitOf(await this.tasks.wait(ctx, id));
  }

  async deleteTask(ctx: CallContext, id: string): Promise<TaskExit> {
    return exitOf(await this.tasks.delete(ctx, id));
  }

  async metrics(ctx: CallContext, id: string): Promise<Omit<TaskMetric, "id">> {
    const m = (await this.tasks.metrics(ctx, [`id==${id}`])).find((x) => x.id === id);
    if (!m) throw errNotFound(`metrics of task ${JSON.stringify(id)}`);
    return { timestamp: m.timestamp, ...(m.data ? { data: m.data } : {}) };
  }

  async removeSnapshot(ctx: CallContext, snapshotter: string, key: string): Promise<void> {
    await this.snapshots.get(snapshotter).remove(ctx, key);
  }
}
