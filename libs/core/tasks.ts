/**
 * Tasks: running containers (containerd.services.tasks.v1.Tasks), as a contract.
 *
 * `TaskService` is implemented in the tasks process by the runtime v2 manager driving shims
 * (services/tasks/src/local/tasks.ts) and over gRPC by `TaskServiceProxy` (libs/clients/tasks.ts).
 * A task is addressed by its container id; its processes by exec id ("" = the init process).
 * Every method takes the call context first and requires a namespace. Errors are errdefs classes:
 * NotFound for an unknown container or task ("task <id> not found") or process, AlreadyExists for a
 * second task or a reused exec id, FailedPrecondition for an operation the state does not allow.
 * No runtime dependencies: types, constants and pure helpers only.
 */
import type { CallContext } from "../context";
import type { TypedValue } from "./sandbox";
import type { Mount } from "./snapshots";

/** containerd.v1.types.Status */
export const TaskStatus = { Unknown: 0, Created: 1, Running: 2, Stopped: 3, Paused: 4, Pausing: 5 } as const;
export type TaskStatus = (typeof TaskStatus)[keyof typeof TaskStatus];

export interface TaskIO {
  stdin: string;
  stdout: string;
  stderr: string;
  terminal: boolean;
}

export interface ProcessState extends TaskIO {
  /** The container id for the init process, else the exec id. */
  id: string;
  pid: number;
  status: TaskStatus;
  exitStatus: number;
  exitedAt?: Date;
}

export interface ExitInfo {
  pid: number;
  exitStatus: number;
  exitedAt: Date;
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
}

export interface CreateTaskInput {
  containerId: string;
  rootfs: Mount[];
  io: TaskIO;
  checkpoint?: Descriptor;
  /** Task options (e.g. `containerd.runc.v1.Options`); the container's runtime options otherwise. */
  options?: TypedValue;
  /** A shim binary overriding the container's runtime name. */
  runtimePath?: string;
  /**
   * A running shim's task API to create the task in (`<protocol>+<address>`, e.g. a sandbox's shim as
   * the sandbox Controller's Start returned it), instead of starting a shim; with its API version.
   */
  taskApiAddress?: string;
  taskApiVersion?: number;
}

export interface ProcessInfo {
  pid: number;
  /** For the runc shims, `containerd.runc.v1.ProcessDetails{exec_id}` of exec'd processes. */
  info?: TypedValue;
}

export interface TaskMetric {
  id: string;
  timestamp: Date;
  /** `io.containerd.cgroups.v1.Metrics` or `io.containerd.cgroups.v2.Metrics`. */
  data?: TypedValue;
}

export interface TaskService {
  /** NotFound for an unknown container; AlreadyExists when it already has a task. Returns the init pid. */
  create(ctx: CallContext, input: CreateTaskInput): Promise<number>;
  /** Start the init process (execId "") or an exec'd process; returns its pid. */
  start(ctx: CallContext, containerId: string, execId?: string): Promise<number>;
  /** Delete a stopped (or never started) task and its shim; returns the init's exit. */
  delete(ctx: CallContext, containerId: string): Promise<ExitInfo>;
  deleteProcess(ctx: CallContext, containerId: string, execId: string): Promise<ExitInfo>;
  get(ctx: CallContext, containerId: string, execId?: string): Promise<ProcessState>;
  /** The init processes of every task in the namespace. */
  list(ctx: CallContext): Promise<ProcessState[]>;
  kill(ctx: CallContext, containerId: string, signal: number, opts?: { execId?: string; all?: boolean }): Promise<void>;
  /** Add a process (`spec`: an OCI Process as JSON); start it with `start`. */
  exec(ctx: CallContext, containerId: string, execId: string, io: TaskIO, spec: TypedValue): Promise<void>;
  resizePty(ctx: CallContext, containerId: string, execId: string, width: number, height: number): Promise<void>;
  closeIO(ctx: CallContext, containerId: string, execId: string, stdin: boolean): Promise<void>;
  pause(ctx: CallContext, containerId: string): Promise<void>;
  resume(ctx: CallContext, containerId: string): Promise<void>;
  listPids(ctx: CallContext, containerId: string): Promise<ProcessInfo[]>;
  checkpoint(ctx: CallContext, containerId: string, opts: { parentCheckpoint?: string; options?: TypedValue }): Promise<Descriptor[]>;
  update(ctx: CallContext, containerId: string, resources?: TypedValue, annotations?: Record<string, string>): Promise<void>;
  /** Metrics of the namespace's tasks matching `filters` (`id`, `namespace`). */
  metrics(ctx: CallContext, filters?: readonly string[]): Promise<TaskMetric[]>;
  /** Block until the process exits (it may not have started yet). */
  wait(ctx: CallContext, containerId: string, execId?: string): Promise<ExitInfo>;
}

export const TASK_EVENTS = {
  create: { topic: "/tasks/create", type: "containerd.events.TaskCreate" },
  start: { topic: "/tasks/start", type: "containerd.events.TaskStart" },
  exit: { topic: "/tasks/exit", type: "containerd.events.TaskExit" },
  delete: { topic: "/tasks/delete", type: "containerd.events.TaskDelete" },
  oom: { topic: "/tasks/oom", type: "containerd.events.TaskOOM" },
  execAdded: { topic: "/tasks/exec-added", type: "containerd.events.TaskExecAdded" },
  execStarted: { topic: "/tasks/exec-started", type: "containerd.events.TaskExecStarted" },
  paused: { topic: "/tasks/paused", type: "containerd.events.TaskPaused" },
  resumed: { topic: "/tasks/resumed", type: "containerd.events.TaskResumed" },
  checkpointed: { topic: "/tasks/checkpointed", type: "containerd.events.TaskCheckpointed" },
} as const;
