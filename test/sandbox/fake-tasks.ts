/** An in-memory stand-in for the tasks process (containers and tasks), for podsandbox controller tests. */
import type { CallContext } from "#libs/context";
import { errAlreadyExists, errFailedPrecondition, errNotFound, errUnavailable } from "#libs/errdefs";
import type { Mount } from "#libs/core/snapshots";
import type { TypedValue } from "#libs/core/sandbox";
import { TaskStatus } from "#libs/core/tasks";
import type { ContainerRecord, ContainerSpec, PodTasks, TaskExit, TaskState } from "#services/sandbox/src/local/podsandbox/tasks";

interface FakeTask {
  pid: number;
  status: TaskStatus;
  exit?: TaskExit;
  waiters: { resolve: (e: TaskExit) => void; reject: (e: unknown) => void }[];
  rootfs: Mount[];
}

export class FakeTasks implements PodTasks {
  readonly containers = new Map<string, ContainerSpec & { snapshotter: string; snapshotKey: string }>();
  readonly tasks = new Map<string, FakeTask>();
  readonly removedSnapshots: string[] = [];
  readonly kills: { id: string; signal: number }[] = [];
  /** While true every call fails with Unavailable (the tasks process is down). */
  down = false;
  /** Signals a task ignores (e.g. 15 for a process that does not handle SIGTERM). */
  ignore = new Map<string, Set<number>>();
  private nextPid = 1000;

  private key(ctx: CallContext, id: string): string {
    return `${ctx.namespace}/${id}`;
  }
  private up(): void {
    if (this.down) throw errUnavailable("connection refused");
  }

  async createContainer(ctx: CallContext, c: ContainerSpec): Promise<void> {
    this.up();
    const k = this.key(ctx, c.id);
    if (this.containers.has(k)) throw errAlreadyExists(`container "${c.id}"`);
    this.containers.set(k, { ...c, snapshotter: "", snapshotKey: "" });
  }
  /** Add an application container (as `flotilla run --sandbox` would) with a running task. */
  addMember(ns: string, id: string, sandbox: string): void {
    this.containers.set(`${ns}/${id}`, { id, labels: {}, runtime: "io.containerd.runc.v2", spec: {}, sandbox, snapshotter: "overlayfs", snapshotKey: id });
    this.tasks.set(`${ns}/${id}`, { pid: this.nextPid++, status: TaskStatus.Running, waiters: [], rootfs: [] });
  }
  async deleteContainer(ctx: CallContext, id: string): Promise<void> {
    this.up();
    const k = this.key(ctx, id);
    if (!this.containers.has(k)) throw errNotFound(`container "${id}"`);
    if (this.tasks.has(k)) throw errFailedPrecondition(`cannot delete container "${id}": task must be deleted first`);
    this.containers.delete(k);
  }
  async listContainers(ctx: CallContext): Promise<ContainerRecord[]> {
    this.up();
    return [...this.containers.entries()].filter(([k]) => k.startsWith(`${ctx.namespace}/`)).map(([, c]) => ({ id: c.id, labels: c.labels, sandbox: c.sandbox, snapshotter: c.snapshotter, snapshotKey: c.snapshotKey }));
  }
  async createTask(ctx: CallContext, id: string, rootfs: Mount[]): Promise<number> {
    this.up();
    const k = this.key(ctx, id);
    if (!this.containers.has(k)) throw errNotFound(`container "${id}"`);
    if (this.tasks.has(k)) throw errAlreadyExists(`task "${id}"`);
    const t: FakeTask = { pid: this.nextPid++, status: TaskStatus.Created, waiters: [], rootfs };
    this.tasks.set(k, t);
    return t.pid;
  }
  async startTask(ctx: CallContext, id: string): Promise<number> {
    this.up();
    const t = this.task(ctx, id);
    t.status = TaskStatus.Running;
    return t.pid;
  }
  private task(ctx: CallContext, id: string): FakeTask {
    const t = this.tasks.get(this.key(ctx, id));
    if (!t) throw errNotFound(`task "${id}"`);
    return t;
  }
  async getTask(ctx: CallContext, id: string): Promise<TaskState> {
    this.up();
    const t = this.task(ctx, id);
    return { pid: t.pid, status: t.status, exitStatus: t.exit?.exitStatus ?? 0, ...(t.exit ? { exitedAt: t.exit.exitedAt } : {}) };
  }
  /** Make a task exit (as if its process died). */
  exit(ns: string, id: string, status: number): void {
    const t = this.tasks.get(`${ns}/${id}`);
    if (!t || t.status === TaskStatus.Stopped) return;
    t.status = TaskStatus.Stopped;
    t.exit = { exitStatus: status, exitedAt: new Date() };
    for (const w of t.waiters.splice(0)) w.resolve(t.exit);
  }
  async killTask(ctx: CallContext, id: string, signal: number): Promise<void> {
    this.up();
    const t = this.task(ctx, id);
    this.kills.push({ id, signal });
    if (t.status === TaskStatus.Stopped) throw errNotFound(`process already finished`);
    if (this.ignore.get(id)?.has(signal)) return;
    setTimeout(() => this.exit(ctx.namespace!, id, 128 + signal), 5);
  }
  async waitTask(ctx: CallContext, id: string): Promise<TaskExit> {
    this.up();
    const t = this.task(ctx, id);
    if (t.exit) return t.exit;
    return new Promise((resolve, reject) => {
      t.waiters.push({ resolve, reject });
      ctx.signal.addEventListener("abort", () => reject(errUnavailable("canceled")), { once: true });
    });
  }
  async deleteTask(ctx: CallContext, id: string): Promise<TaskExit> {
    this.up();
    const t = this.task(ctx, id);
    if (t.status === TaskStatus.Running) throw errFailedPrecondition(`task "${id}" must be stopped before deletion`);
    this.tasks.delete(this.key(ctx, id));
    return t.exit ?? { exitStatus: 0, exitedAt: new Date() };
  }
  async metrics(ctx: CallContext, id: string): Promise<{ timestamp: Date; data?: TypedValue }> {
    this.up();
    this.task(ctx, id);
    return { timestamp: new Date(), data: { typeUrl: "io.containerd.cgroups.v1.Metrics", value: Buffer.alloc(0) } };
  }
  async removeSnapshot(_ctx: CallContext, snapshotter: string, key: string): Promise<void> {
    this.up();
    this.removedSnapshots.push(`${snapshotter}/${key}`);
  }
  /** Simulate the tasks process going away: pending waits fail with Unavailable. */
  crash(): void {
    this.down = true;
    for (const t of this.tasks.values()) for (const w of t.waiters.splice(0)) w.reject(errUnavailable("connection reset"));
  }
}
