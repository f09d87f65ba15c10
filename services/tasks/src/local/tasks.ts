/**
 * The local TaskService (containerd's services/tasks/local.go): every call finds the container in the
 * store, then its task in the runtime v2 manager, then talks to the shim. Wait cut off by a dying
 * shim answers with the exit its cleanup recorded.
 */
import { namespaceRequired, validateIdentifier, type CallContext } from "#libs/context";
import { causeText, errInvalidArgument, errNotFound, errNotImplemented, isNotFound } from "#libs/errdefs";
import { parseAll, NOT_PRESENT, present } from "#libs/filters";
import { fromTimestamp } from "#libs/proto";
import { isClosedError } from "#libs/ttrpc";
import type { Msg } from "#libs/ttrpc/typed";
import type { ContainerStore, TypedValue } from "#libs/core/containers";
import {
  TaskStatus,
  type CreateTaskInput,
  type Descriptor,
  type ExitInfo,
  type ProcessInfo,
  type ProcessState,
  type TaskIO,
  type TaskMetric,
  type TaskService,
} from "#libs/core/tasks";
import type { ShimManager } from "../runtime/manager";
import type { ContentStore } from "#libs/core/content";
import { decode } from "#libs/proto";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { MEDIA_TYPE_CHECKPOINT, MEDIA_TYPE_CHECKPOINT_CONFIG, specBlob, tarDirectory, writeBlob } from "./checkpoint";
import type { ShimTask } from "../runtime/shim";
import { now } from "#libs/time";

const anyOf = (m: Msg | null | undefined): TypedValue | undefined =>
  m && (m.type_url || (m.value as Uint8Array | undefined)?.length) ? { typeUrl: String(m.type_url), value: Buffer.from(m.value ?? []) } : undefined;
const anyMsg = (a: TypedValue | undefined): Msg | null => (a ? { type_url: a.typeUrl, value: Buffer.from(a.value) } : null);

function exitOf(r: Msg, pid?: number): ExitInfo {
  return { pid: pid ?? Number(r.pid ?? 0), exitStatus: Number(r.exit_status ?? 0), exitedAt: fromTimestamp(r.exited_at) ?? new Date(0) };
}

function stateOf(r: Msg, id: string): ProcessState {
  const at = fromTimestamp(r.exited_at);
  return {
    id,
    pid: Number(r.pid ?? 0),
    status: Number(r.status ?? 0) as TaskStatus,
    stdin: String(r.stdin ?? ""),
    stdout: String(r.stdout ?? ""),
    stderr: String(r.stderr ?? ""),
    terminal: Boolean(r.terminal),
    exitStatus: Number(r.exit_status ?? 0),
    ...(at && at.getTime() > 0 ? { exitedAt: at } : {}),
  };
}

export interface LocalTaskServiceOptions {
  /** Where checkpoint images are dumped before they go to the content store. */
  checkpointDir?: string;
  content?: ContentStore;
}

export class LocalTaskService implements TaskService {
  constructor(
    private readonly containers: ContainerStore,
    private readonly manager: ShimManager,
    private readonly opts: LocalTaskServiceOptions = {},
  ) {}

  private async task(ctx: CallContext, id: string): Promise<ShimTask> {
    const ns = namespaceRequired(ctx);
    await this.containers.get(ctx, id);
    return this.manager.get(ns, id).withTrace(ctx.trace);
  }

  /** Calls on a process must name an existing one (NotFound otherwise), as containerd's t.Process does. */
  private async process(ctx: CallContext, id: string, execId: string | undefined): Promise<ShimTask> {
    const t = await this.task(ctx, id);
    if (execId) await t.call("State", { exec_id: execId });
    return t;
  }

  async create(ctx: CallContext, input: CreateTaskInput): Promise<number> {
    const c = await this.containers.get(ctx, input.containerId);
    if (input.checkpoint) throw errNotImplemented("restoring a task from a checkpoint");
    return this.manager.create(ctx, c, input);
  }

  async start(ctx: CallContext, id: string, execId = ""): Promise<number> {
    const t = await this.process(ctx, id, execId);
    const r = await t.call("Start", { exec_id: execId });
    return Number(r.pid ?? 0);
  }

  async delete(ctx: CallContext, id: string): Promise<ExitInfo> {
    const ns = namespaceRequired(ctx);
    await this.containers.get(ctx, id);
    return this.manager.delete(ns, id, ctx.trace);
  }

  async deleteProcess(ctx: CallContext, id: string, execId: string): Promise<ExitInfo> {
    const t = await this.process(ctx, id, execId);
    return exitOf(await t.call("Delete", { exec_id: execId }));
  }

  async get(ctx: CallContext, id: string, execId = ""): Promise<ProcessState> {
    const t = await this.task(ctx, id);
    try {
      return stateOf(await t.call("State", { exec_id: execId }, 10_000), execId || id);
    } catch (e) {
      if (isClosedError(e)) throw errNotFound(`task ${id}`);
      throw e;
    }
  }

  async list(ctx: CallContext): Promise<ProcessState[]> {
    const ns = namespaceRequired(ctx);
    const states = await Promise.all(this.manager.list(ns).map(async (t) => {
      try {
        return stateOf(await t.call("State", {}, 10_000), t.id);
      } catch (e) {
        if (isNotFound(e) || isClosedError(e)) return undefined;
        ctx.log?.warn({ id: t.id, err: (e as Error).message }, "task state");
        return { id: t.id, pid: 0, status: TaskStatus.Unknown, stdin: "", stdout: "", stderr: "", terminal: false, exitStatus: 0 } as ProcessState;
      }
    }));
    return states.filter((s): s is ProcessState => !!s).sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  async kill(ctx: CallContext, id: string, signal: number, opts: { execId?: string; all?: boolean } = {}): Promise<void> {
    const t = await this.process(ctx, id, opts.execId);
    await t.call("Kill", { exec_id: opts.execId ?? "", signal, all: !!opts.all });
  }

  async exec(ctx: CallContext, id: string, execId: string, io: TaskIO, spec: TypedValue): Promise<void> {
    if (!execId) throw errInvalidArgument("exec id cannot be empty");
    const t = await this.task(ctx, id);
    try {
      validateIdentifier(execId);
    } catch (e) {
      throw errInvalidArgument(`invalid exec id ${execId}: ${causeText(e)}`);
    }
    await t.call("Exec", { exec_id: execId, terminal: io.terminal, stdin: io.stdin, stdout: io.stdout, stderr: io.stderr, spec: anyMsg(spec) });
  }

  async resizePty(ctx: CallContext, id: string, execId: string, width: number, height: number): Promise<void> {
    const t = await this.process(ctx, id, execId);
    await t.call("ResizePty", { exec_id: execId, width, height });
  }

  async closeIO(ctx: CallContext, id: string, execId: string, stdin: boolean): Promise<void> {
    const t = await this.process(ctx, id, execId);
    if (stdin) await t.call("CloseIO", { exec_id: execId, stdin: true });
  }

  async pause(ctx: CallContext, id: string): Promise<void> {
    await (await this.task(ctx, id)).call("Pause", {});
  }

  async resume(ctx: CallContext, id: string): Promise<void> {
    await (await this.task(ctx, id)).call("Resume", {});
  }

  async listPids(ctx: CallContext, id: string): Promise<ProcessInfo[]> {
    const r = await (await this.task(ctx, id)).call("Pids", {});
    return ((r.processes as Msg[] | undefined) ?? []).map((p) => {
      const info = anyOf(p.info);
      return { pid: Number(p.pid ?? 0), ...(info ? { info } : {}) };
    });
  }

  async checkpoint(ctx: CallContext, id: string, opts: { parentCheckpoint?: string; options?: TypedValue }): Promise<Descriptor[]> {
    const c = await this.containers.get(ctx, id);
    const t = await this.task(ctx, id);
    let imagePath = "";
    if (opts.options?.typeUrl.endsWith("containerd.runc.v1.CheckpointOptions")) {
      imagePath = decode<{ image_path: string }>("containerd.runc.v1.CheckpointOptions", opts.options.value).image_path;
    }
    // Without an image path of the caller's, the dump goes to the content store (containerd's rule).
    const temp = !imagePath;
    if (temp) {
      const base = this.opts.checkpointDir ?? path.join(process.env.TMPDIR ?? "/tmp");
      fs.mkdirSync(base, { recursive: true, mode: 0o700 });
      imagePath = fs.mkdtempSync(path.join(base, "ctd-checkpoint-"));
    }
    try {
      await t.call("Checkpoint", { path: imagePath, options: anyMsg(opts.options) });
      if (!temp) return [];
      if (!this.opts.content) throw errNotImplemented("checkpoint: no content store to write the checkpoint to");
      if (!c.spec) throw errInvalidArgument(`container ${id} has no spec`);
      const rand = crypto.randomBytes(4).toString("hex");
      const image = await writeBlob(ctx, this.opts.content, `checkpoint-${id}-${rand}`, MEDIA_TYPE_CHECKPOINT, tarDirectory(imagePath));
      const spec = await writeBlob(ctx, this.opts.content, `checkpoint-${id}-${rand}-spec`, MEDIA_TYPE_CHECKPOINT_CONFIG, specBlob(c.spec));
      return [image, spec];
    } finally {
      if (temp) fs.rmSync(imagePath, { recursive: true, force: true });
    }
  }

  async update(ctx: CallContext, id: string, resources?: TypedValue, annotations: Record<string, string> = {}): Promise<void> {
    await (await this.task(ctx, id)).call("Update", { resources: anyMsg(resources), annotations });
  }

  async metrics(ctx: CallContext, filters: readonly string[] = []): Promise<TaskMetric[]> {
    const ns = namespaceRequired(ctx);
    const f = parseAll(filters);
    const tasks = this.manager.list(ns).filter((t) => f.match((fp) => (fp[0] === "id" ? present(t.id) : fp[0] === "namespace" ? present(t.namespace) : NOT_PRESENT)));
    const out = await Promise.all(tasks.map(async (t): Promise<TaskMetric | undefined> => {
      const collected = now();
      try {
        const r = await t.call("Stats", {}, 10_000);
        const data = anyOf(r.stats);
        return { id: t.id, timestamp: collected, ...(data ? { data } : {}) };
      } catch (e) {
        if (!isNotFound(e) && !isClosedError(e)) ctx.log?.error({ id: t.id, err: (e as Error).message }, "collecting metrics");
        return undefined;
      }
    }));
    return out.filter((m): m is TaskMetric => !!m);
  }

  async wait(ctx: CallContext, id: string, execId = ""): Promise<ExitInfo> {
    const ns = namespaceRequired(ctx);
    const t = await this.process(ctx, id, execId);
    try {
      const r = await t.call("Wait", { exec_id: execId }, undefined, ctx.signal);
      return exitOf(r, 0);
    } catch (e) {
      if (isClosedError(e)) {
        const d = this.manager.deadExit(ns, id);
        if (d) return d;
      }
      throw e;
    }
  }
}
