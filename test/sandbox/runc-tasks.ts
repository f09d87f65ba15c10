/**
 * A test stand-in for the tasks process that runs real containers with runc (create/start/kill/delete,
 * bundles under a temp dir), so the podsandbox controller's pause container and the member container
 * spec are checked against a real runtime, real namespaces and real CNI before the tasks process exists.
 * Exit statuses are not reaped (runc's init is not our child): a task killed with signal N reports 128+N.
 */
import { execFileSync, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import type { CallContext } from "#libs/context";
import { errAlreadyExists, errFailedPrecondition, errNotFound, errNotImplemented } from "#libs/errdefs";
import type { Mount } from "#libs/core/snapshots";
import type { TypedValue } from "#libs/core/sandbox";
import { mountsBelow } from "#libs/cni";
import { TaskStatus } from "#libs/core/tasks";
import type { ContainerRecord, ContainerSpec, PodTasks, TaskExit, TaskState } from "#services/sandbox/src/local/podsandbox/tasks";

export class RuncTasks implements PodTasks {
  readonly containers = new Map<string, ContainerSpec>();
  private readonly killedWith = new Map<string, number>();
  private readonly root: string;

  constructor(private readonly dir: string) {
    this.root = path.join(dir, "runc");
    fs.mkdirSync(this.root, { recursive: true });
  }

  private rid(ctx: CallContext, id: string): string {
    return `${ctx.namespace}-${id}`;
  }
  private bundle(ctx: CallContext, id: string): string {
    return path.join(this.dir, "bundles", ctx.namespace!, id);
  }
  private runc(args: string[]): { status: number; out: string; err: string } {
    if (args[0] === "create") {
      // The container's init inherits runc's stdio: never hand it our pipes (spawnSync would wait on them).
      const logFile = path.join(this.dir, "runc.log");
      fs.rmSync(logFile, { force: true });
      const r = spawnSync("runc", ["--root", this.root, "--log", logFile, ...args], { stdio: "ignore", timeout: 30000 });
      return { status: r.status ?? 1, out: "", err: fs.existsSync(logFile) ? fs.readFileSync(logFile, "utf8") : "" };
    }
    const r = spawnSync("runc", ["--root", this.root, ...args], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], timeout: 30000 });
    return { status: r.status ?? 1, out: r.stdout, err: r.stderr };
  }
  private state(ctx: CallContext, id: string): { pid: number; status: string } | undefined {
    const r = this.runc(["state", this.rid(ctx, id)]);
    if (r.status !== 0) return undefined;
    return JSON.parse(r.out) as { pid: number; status: string };
  }

  async createContainer(ctx: CallContext, c: ContainerSpec): Promise<void> {
    const k = `${ctx.namespace}/${c.id}`;
    if (this.containers.has(k)) throw errAlreadyExists(`container "${c.id}"`);
    this.containers.set(k, c);
  }
  async deleteContainer(ctx: CallContext, id: string): Promise<void> {
    if (!this.containers.delete(`${ctx.namespace}/${id}`)) throw errNotFound(`container "${id}"`);
  }
  async listContainers(ctx: CallContext): Promise<ContainerRecord[]> {
    return [...this.containers.entries()].filter(([k]) => k.startsWith(`${ctx.namespace}/`)).map(([, c]) => ({ id: c.id, labels: c.labels, sandbox: c.sandbox, snapshotter: "", snapshotKey: "" }));
  }
  async createTask(ctx: CallContext, id: string, rootfs: Mount[]): Promise<number> {
    const c = this.containers.get(`${ctx.namespace}/${id}`);
    if (!c) throw errNotFound(`container "${id}"`);
    if (this.state(ctx, id)) throw errAlreadyExists(`task "${id}"`);
    const b = this.bundle(ctx, id);
    fs.mkdirSync(path.join(b, "rootfs"), { recursive: true });
    for (const m of rootfs) {
      if (m.type !== "bind") throw errNotImplemented(`mount type ${m.type}`);
      execFileSync("mount", ["--rbind", m.source, path.join(b, "rootfs")]);
      if (m.options.includes("ro")) execFileSync("mount", ["-o", "remount,bind,ro", path.join(b, "rootfs")]);
    }
    fs.writeFileSync(path.join(b, "config.json"), JSON.stringify(c.spec));
    const r = this.runc(["create", "--bundle", b, this.rid(ctx, id)]);
    if (r.status !== 0) throw errFailedPrecondition(`runc create ${id}: ${r.err.trim()}`);
    return this.state(ctx, id)!.pid;
  }
  async startTask(ctx: CallContext, id: string): Promise<number> {
    const r = this.runc(["start", this.rid(ctx, id)]);
    if (r.status !== 0) throw errFailedPrecondition(`runc start ${id}: ${r.err.trim()}`);
    return this.state(ctx, id)!.pid;
  }
  async getTask(ctx: CallContext, id: string): Promise<TaskState> {
    const st = this.state(ctx, id);
    if (!st) throw errNotFound(`task "${id}"`);
    const status = st.status === "running" ? TaskStatus.Running : st.status === "created" ? TaskStatus.Created : TaskStatus.Stopped;
    return { pid: st.pid, status, exitStatus: status === TaskStatus.Stopped ? 128 + (this.killedWith.get(this.rid(ctx, id)) ?? 0) : 0 };
  }
  async killTask(ctx: CallContext, id: string, signal: number, all = false): Promise<void> {
    const st = this.state(ctx, id);
    if (!st) throw errNotFound(`task "${id}"`);
    if (st.status === "stopped") throw errNotFound(`process already finished`);
    this.killedWith.set(this.rid(ctx, id), signal);
    this.runc(["kill", ...(all ? ["--all"] : []), this.rid(ctx, id), String(signal)]);
  }
  async waitTask(ctx: CallContext, id: string): Promise<TaskExit> {
    for (;;) {
      const t = await this.getTask(ctx, id);
      if (t.status === TaskStatus.Stopped) return { exitStatus: t.exitStatus, exitedAt: new Date() };
      if (ctx.signal.aborted) throw errFailedPrecondition("wait canceled");
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  async deleteTask(ctx: CallContext, id: string): Promise<TaskExit> {
    const st = this.state(ctx, id);
    if (!st) throw errNotFound(`task "${id}"`);
    if (st.status === "running") throw errFailedPrecondition(`task "${id}" must be stopped before deletion`);
    this.runc(["delete", "-f", this.rid(ctx, id)]);
    const b = this.bundle(ctx, id);
    for (const m of mountsBelow(b).sort((x, y) => y.length - x.length)) spawnSync("umount", ["-l", m]);
    fs.rmSync(b, { recursive: true, force: true });
    return { exitStatus: 128 + (this.killedWith.get(this.rid(ctx, id)) ?? 0), exitedAt: new Date() };
  }
  async metrics(): Promise<{ timestamp: Date; data?: TypedValue }> {
    throw errNotImplemented("metrics");
  }
  async removeSnapshot(): Promise<void> {}

  /** Force-remove everything left (test cleanup), and the per-namespace cgroup parents runc left (`/<ns>`, empty). */
  cleanup(namespaces: string[] = []): void {
    const r = this.runc(["list", "-q"]);
    for (const id of r.out.split("\n").filter(Boolean)) this.runc(["delete", "-f", id]);
    for (const m of mountsBelow(this.dir).sort((x, y) => y.length - x.length)) spawnSync("umount", ["-l", m]);
    for (const ns of namespaces) {
      for (const ctl of fs.existsSync("/sys/fs/cgroup") ? fs.readdirSync("/sys/fs/cgroup") : []) {
        try {
          fs.rmdirSync(path.join("/sys/fs/cgroup", ctl, ns));
        } catch {
          /* absent, busy or not a hierarchy */
        }
      }
    }
  }
}
