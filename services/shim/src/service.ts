/**
 * The shim's task service (containerd.task.v2.Task, also served as containerd.task.v3.Task): the
 * RPCs of ../shared/REFERENCE.md part 2 B.5 over the containers this shim owns, publishing
 * containerd's task events in order (create, start, exec-added, exec-started, paused, resumed, oom,
 * exit, delete).
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { classError } from "#libs/ttrpc/errors";
import type { ServiceDesc, UnaryHandler } from "#libs/ttrpc/server";
import { Container } from "./container";
import { isLegacy, joinCgroup, statsV1, statsV2 } from "./cgroups";
import { decode, encode, type Obj, type Schema } from "./pb";
import * as M from "./messages";
import { nowTimestamp, TRACEPARENT_KEY, type Publisher } from "./publisher";
import { STATUS_CODE, type Process } from "./process";
import type { Reaper } from "./reaper";
import { Runc } from "./runc";
import type { ShimLogger } from "./log";
import type { MethodName, ServerRequest, ServerResponse } from "#libs/proto/types";

export interface ServiceOptions {
  namespace: string;
  publisher: Publisher;
  reaper: Reaper;
  log: ShimLogger;
  /** Default OCI runtime binary and state root (options.binary_name / options.root override them). */
  runtimeBinary: string;
  runtimeRoot: string;
  /** Global options for the OCI runtime (used only with the default binary). */
  runtimeArgs?: string[];
  /** Called when Shutdown finds no containers left. */
  onShutdown: () => void;
  /** A warm shim's first Create: take the namespace (from the call). */
  onAdopt?: (namespace: string) => void;
  /**
   * Every Create: the newest bundle (the shim logs to its FIFO from now on); and when the container
   * whose bundle that is goes while others remain, the newest remaining one's.
   */
  onBundle?: (bundle: string, id: string) => void;
}

/** The task API's messages, as the codec in ./pb decodes them and encodes them (v2 has the same ones as v3). */
type TaskApi = "containerd.task.v3.Task";
type Req<K extends MethodName<TaskApi>> = ServerRequest<TaskApi, K>;
type Res<K extends MethodName<TaskApi>> = ServerResponse<TaskApi, K>;

const ts = (d: Date | undefined): Obj | null => (d ? nowTimestamp(d) : null);

export class TaskService {
  readonly containers = new Map<string, Container>();
  namespace: string;
  /** The container whose bundle the shim logs to and works in (see onBundle). */
  private bundleOwner = "";

  constructor(private readonly o: ServiceOptions) {
    this.namespace = o.namespace;
  }

  private get(id: string): Container {
    const c = this.containers.get(id);
    if (!c) throw classError("not found", "container not created");
    return c;
  }

  /** Forget a container; a shim serving other members moves its log and cwd to the newest of them. */
  private forget(id: string): void {
    this.containers.delete(id);
    if (id !== this.bundleOwner) return;
    const next = [...this.containers.values()].pop();
    this.bundleOwner = next?.id ?? "";
    if (next) this.o.onBundle?.(next.bundle, next.id);
  }

  /** `trace`: the `traceparent` of the call that caused the event. */
  private publish(topic: string, schema: Schema, ev: Obj, trace: string | undefined): void {
    this.o.publisher.publish(topic, schema, ev, trace);
  }

  // An exit carries the trace of the last call that acted on the process (Start, or a Kill); an OOM that of the container's.
  private onExit = (c: Container, p: Process): void => {
    this.publish("/tasks/exit", M.TaskExit, { container_id: c.id, id: p.id, pid: p.pid, exit_status: p.exitStatus, exited_at: ts(p.exitedAt) }, p.trace);
  };

  private onOOM = (c: Container): void => {
    this.publish("/tasks/oom", M.TaskOOM, { container_id: c.id }, c.init.trace);
  };

  async create(r: Req<"Create">, callNamespace?: string, trace?: string): Promise<Res<"Create">> {
    const t0 = performance.now();
    const id = String(r.id);
    if (this.containers.has(id)) throw classError("already exists", `container ${id}`);
    if (!this.namespace) {
      if (!callNamespace) throw classError("failed precondition", "namespace is required");
      this.namespace = callNamespace;
      this.o.onAdopt?.(callNamespace);
    } else if (callNamespace && callNamespace !== this.namespace) {
      throw classError("failed precondition", `shim serves namespace ${this.namespace}, not ${callNamespace}`);
    }
    const opts = r.options?.type_url ? decode(M.RuncOptions, r.options.value) : decode(M.RuncOptions, Buffer.alloc(0));
    if (r.options?.type_url && !String(r.options.type_url).endsWith("containerd.runc.v1.Options")) {
      throw classError("invalid argument", `unsupported runtime options type ${r.options.type_url}`);
    }
    const bundle = String(r.bundle);
    if (opts.shim_cgroup) {
      // containerd's runc shim joins ShimCgroup when it starts; a warm shim does at its Create.
      try {
        joinCgroup(process.pid, opts.shim_cgroup);
      } catch (e) {
        throw classError("unknown", `failed to add shim to cgroup ${opts.shim_cgroup}: ${(e as Error).message}`);
      }
    }
    const binary = opts.binary_name || this.o.runtimeBinary;
    const root = opts.root || path.join(this.o.runtimeRoot, this.namespace);
    const runtimeArgs = opts.binary_name ? [] : this.o.runtimeArgs ?? [];
    fs.writeFileSync(path.join(bundle, "options.json"), JSON.stringify({ ...opts, binary_name: binary, root, runtime_args: runtimeArgs }), { mode: 0o600 });
    fs.writeFileSync(path.join(bundle, "runtime"), binary, { mode: 0o600 });
    const runc = new Runc({ binary, root, log: path.join(bundle, "log.json"), systemdCgroup: opts.systemd_cgroup, extraArgs: runtimeArgs }, this.o.reaper);
    const stdio = { stdin: String(r.stdin), stdout: String(r.stdout), stderr: String(r.stderr), terminal: Boolean(r.terminal), namespace: this.namespace };
    const c = new Container(
      { id, bundle, rootfs: r.rootfs, stdio, runc, noPivot: opts.no_pivot_root, noNewKeyring: opts.no_new_keyring, checkpoint: r.checkpoint || undefined },
      this.o.reaper,
      { onExit: this.onExit, onOOM: this.onOOM },
    );
    c.init.trace = trace;
    this.containers.set(id, c);
    this.bundleOwner = id;
    this.o.onBundle?.(bundle, id);
    // The exit handler waits on `busy`: /tasks/create goes out before any /tasks/exit.
    const creating = (async () => {
      const pid = await c.create();
      this.publish("/tasks/create", M.TaskCreate, {
        container_id: id,
        bundle,
        rootfs: r.rootfs,
        io: { stdin: stdio.stdin, stdout: stdio.stdout, stderr: stdio.stderr, terminal: stdio.terminal },
        checkpoint: r.checkpoint,
        pid,
      }, trace);
      return pid;
    })();
    c.init.busy = creating;
    let pid: number;
    try {
      pid = await creating;
    } catch (e) {
      this.forget(id);
      throw e;
    }
    this.o.log.info("created", { id, pid, ms: c.timings, total: Math.round(performance.now() - t0) });
    return { pid };
  }

  async start(r: Req<"Start">, trace?: string): Promise<Res<"Start">> {
    const c = this.get(r.id);
    if (!r.exec_id) {
      if (c.init.status === "created") c.init.trace = trace;
      const t0 = performance.now();
      const starting = (async () => {
        const pid = await c.start();
        this.publish("/tasks/start", M.TaskStart, { container_id: c.id, pid }, trace);
        return pid;
      })();
      c.init.busy = starting;
      const pid = await starting;
      this.o.log.debug("started", { id: c.id, ms: Math.round(performance.now() - t0), runc: c.timings.runcStart });
      return { pid };
    }
    const e = c.process(r.exec_id);
    if (e.status === "created") e.trace = trace;
    const starting = (async () => {
      const pid = await c.startExec(e as never);
      this.publish("/tasks/exec-started", M.TaskExecStarted, { container_id: c.id, exec_id: r.exec_id, pid }, trace);
      return pid;
    })();
    e.busy = starting;
    return { pid: await starting };
  }

  async delete(r: Req<"Delete">, trace?: string): Promise<Res<"Delete">> {
    const c = this.get(r.id);
    if (r.exec_id) {
      const p = await c.deleteExec(r.exec_id);
      return { pid: p.pid, exit_status: p.exitStatus, exited_at: ts(p.exitedAt) };
    }
    const t0 = performance.now();
    // Deleting a created task kills it: that exit is the Delete's.
    if (!c.init.hasExited) c.init.trace = trace;
    const p = await c.deleteInit();
    this.forget(c.id);
    this.publish("/tasks/delete", M.TaskDelete, { container_id: c.id, pid: p.pid, exit_status: p.exitStatus, exited_at: ts(p.exitedAt), id: "" }, trace);
    this.o.log.info("deleted", { id: c.id, exitStatus: p.exitStatus, ms: Math.round(performance.now() - t0) });
    return { pid: p.pid, exit_status: p.exitStatus, exited_at: ts(p.exitedAt) };
  }

  async exec(r: Req<"Exec">, trace?: string): Promise<Res<"Exec">> {
    const c = this.get(r.id);
    const execId = String(r.exec_id);
    c.reserveExec(execId);
    let spec: Record<string, unknown>;
    try {
      spec = JSON.parse(Buffer.from(r.spec?.value ?? []).toString() || "{}") as Record<string, unknown>;
      c.addExec(execId, { stdin: r.stdin, stdout: r.stdout, stderr: r.stderr, terminal: r.terminal, namespace: this.namespace }, spec);
    } catch (e) {
      c.releaseExec(execId);
      throw e instanceof SyntaxError ? classError("invalid argument", `exec spec: ${e.message}`) : e;
    }
    this.publish("/tasks/exec-added", M.TaskExecAdded, { container_id: c.id, exec_id: execId }, trace);
    return {};
  }

  async state(r: Req<"State">): Promise<Res<"State">> {
    const c = this.get(r.id);
    const p = c.process(r.exec_id);
    return {
      id: p.id,
      bundle: c.bundle,
      pid: p.pid,
      status: STATUS_CODE[p.status],
      stdin: p.stdio.stdin,
      stdout: p.stdio.stdout,
      stderr: p.stdio.stderr,
      terminal: p.stdio.terminal,
      exit_status: p.exitStatus,
      exited_at: ts(p.exitedAt),
      exec_id: r.exec_id ? p.id : "",
    };
  }

  async kill(r: Req<"Kill">, trace?: string): Promise<Res<"Kill">> {
    const c = this.get(r.id);
    // The exit a kill causes carries its trace (a process already gone keeps the one it has).
    const p = r.exec_id ? c.execs.get(r.exec_id) : c.init;
    const before = p?.trace;
    if (p && !p.hasExited) p.trace = trace;
    try {
      await c.kill(r.exec_id, r.signal, r.all);
    } catch (e) {
      if (p && !p.hasExited) p.trace = before;
      throw e;
    }
    return {};
  }

  async pause(r: Req<"Pause">, trace?: string): Promise<Res<"Pause">> {
    const c = this.get(r.id);
    await c.pause();
    this.publish("/tasks/paused", M.TaskPaused, { container_id: c.id }, trace);
    return {};
  }

  async resume(r: Req<"Resume">, trace?: string): Promise<Res<"Resume">> {
    const c = this.get(r.id);
    await c.resume();
    this.publish("/tasks/resumed", M.TaskResumed, { container_id: c.id }, trace);
    return {};
  }

  async pids(r: Req<"Pids">): Promise<Res<"Pids">> {
    const c = this.get(r.id);
    let pids: number[];
    try {
      pids = await c.runc.ps(c.id);
    } catch (e) {
      throw classError("unknown", (e as Error).message);
    }
    const execByPid = new Map([...c.execs.values()].filter((e) => e.pid).map((e) => [e.pid, e.id]));
    return {
      processes: pids.map((pid) => {
        const execId = execByPid.get(pid);
        return { pid, info: execId ? { type_url: M.ProcessDetails.name, value: encode(M.ProcessDetails, { exec_id: execId }) } : null };
      }),
    };
  }

  async closeIO(r: Req<"CloseIO">): Promise<Res<"CloseIO">> {
    const p = this.get(r.id).process(r.exec_id);
    if (r.stdin) p.closeStdin();
    return {};
  }

  async resizePty(r: Req<"ResizePty">): Promise<Res<"ResizePty">> {
    const p = this.get(r.id).process(r.exec_id);
    if (p.status === "stopped" || p.status === "deleted") throw classError("failed precondition", "cannot resize a stopped container");
    p.resize(r.width, r.height);
    return {};
  }

  async update(r: Req<"Update">): Promise<Res<"Update">> {
    const c = this.get(r.id);
    // containerd's init states allow Update when created, running or paused.
    const st = c.init.status;
    if (st !== "created" && st !== "running" && st !== "paused") throw classError("failed precondition", `cannot update a ${st} process`);
    try {
      await c.runc.update(c.id, Buffer.from(r.resources?.value ?? []).toString() || "{}");
    } catch (e) {
      throw classError("unknown", (e as Error).message);
    }
    return {};
  }

  async checkpoint(r: Req<"Checkpoint">, trace?: string): Promise<Res<"Checkpoint">> {
    const c = this.get(r.id);
    const o = r.options?.type_url ? decode(M.CheckpointOptions, r.options.value) : decode(M.CheckpointOptions, Buffer.alloc(0));
    if (c.init.status !== "running" && c.init.status !== "paused") throw classError("failed precondition", `cannot checkpoint a ${c.init.status} process`);
    try {
      await c.runc.checkpoint(c.id, {
        imagePath: o.image_path || r.path,
        workPath: o.work_path || undefined,
        parentPath: o.parent_path || undefined,
        exit: o.exit,
        tcp: o.open_tcp,
        unixSockets: o.external_unix_sockets,
        terminal: o.terminal,
        fileLocks: o.file_locks,
        emptyNs: o.empty_namespaces,
      });
    } catch (e) {
      throw classError("unknown", (e as Error).message);
    }
    this.publish("/tasks/checkpointed", M.TaskCheckpointed, { container_id: c.id, checkpoint: o.image_path || r.path }, trace);
    return {};
  }

  async wait(r: Req<"Wait">): Promise<Res<"Wait">> {
    const p = this.get(r.id).process(r.exec_id);
    const e = await p.wait();
    return { exit_status: e.status, exited_at: ts(e.at) };
  }

  async stats(r: Req<"Stats">): Promise<Res<"Stats">> {
    const c = this.get(r.id);
    if (!c.cgroup) throw classError("not found", "cgroup does not exist");
    const legacy = isLegacy();
    const schema = legacy ? M.MetricsV1 : M.MetricsV2;
    const data = legacy ? statsV1(c.cgroup) : statsV2(c.cgroup);
    return { stats: { type_url: schema.name, value: encode(schema, data) } };
  }

  async connect(r: Req<"Connect">): Promise<Res<"Connect">> {
    const c = this.containers.get(r.id);
    return { shim_pid: process.pid, task_pid: c?.init.pid ?? 0, version: "" };
  }

  async shutdown(): Promise<Res<"Shutdown">> {
    if (this.containers.size === 0) setImmediate(() => this.o.onShutdown());
    return {};
  }

  /** ttrpc handlers for the service (the same for v2 and v3). */
  descriptor(): ServiceDesc {
    // `fn` gets the caller's trace context too (the events a call causes carry it).
    const h = <K extends MethodName<TaskApi>>(req: Schema, res: Schema, fn: (r: Req<K>, trace: string | undefined) => Promise<Res<K>>): UnaryHandler => async (ctx, payload) =>
      encode(res, await fn(decode(req, payload) as Req<K>, ctx.metadata[TRACEPARENT_KEY]?.[0]));
    return {
      methods: {
        State: h<"State">(M.StateRequest, M.StateResponse, (r) => this.state(r)),
        Create: async (ctx, payload) => encode(M.CreateTaskResponse, await this.create(decode(M.CreateTaskRequest, payload) as Req<"Create">, ctx.namespace, ctx.metadata[TRACEPARENT_KEY]?.[0])),
        Start: h<"Start">(M.StartRequest, M.StartResponse, (r, t) => this.start(r, t)),
        Delete: h<"Delete">(M.DeleteRequest, M.DeleteResponse, (r, t) => this.delete(r, t)),
        Pids: h<"Pids">(M.PidsRequest, M.PidsResponse, (r) => this.pids(r)),
        Pause: h<"Pause">(M.PauseRequest, M.Empty, (r, t) => this.pause(r, t)),
        Resume: h<"Resume">(M.ResumeRequest, M.Empty, (r, t) => this.resume(r, t)),
        Checkpoint: h<"Checkpoint">(M.CheckpointTaskRequest, M.Empty, (r, t) => this.checkpoint(r, t)),
        Kill: h<"Kill">(M.KillRequest, M.Empty, (r, t) => this.kill(r, t)),
        Exec: h<"Exec">(M.ExecProcessRequest, M.Empty, (r, t) => this.exec(r, t)),
        ResizePty: h<"ResizePty">(M.ResizePtyRequest, M.Empty, (r) => this.resizePty(r)),
        CloseIO: h<"CloseIO">(M.CloseIORequest, M.Empty, (r) => this.closeIO(r)),
        Update: h<"Update">(M.UpdateTaskRequest, M.Empty, (r) => this.update(r)),
        Wait: h<"Wait">(M.WaitRequest, M.WaitResponse, (r) => this.wait(r)),
        Stats: h<"Stats">(M.StatsRequest, M.StatsResponse, (r) => this.stats(r)),
        Connect: h<"Connect">(M.ConnectRequest, M.ConnectResponse, (r) => this.connect(r)),
        Shutdown: h<"Shutdown">(M.ShutdownRequest, M.Empty, () => this.shutdown()),
      },
    };
  }
}
