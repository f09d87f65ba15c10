/**
 * One connected shim task: the ttrpc Task API (v3, downgraded to v2 when the shim answers
 * NotImplemented, as containerd does) with the namespace in `containerd-namespace-ttrpc`, the shim's
 * log FIFO copied into our log, and the hook that fires when the connection drops.
 */
import * as fs from "node:fs";
import * as net from "node:net";
import type { Logger } from "pino";
import { isNotImplemented } from "#libs/errdefs";
import { TtrpcClient, NAMESPACE_KEY } from "#libs/ttrpc";
import type { Metadata } from "#libs/ttrpc/wire";
import { injectIntoHeaders, metadataCarrier, type Context } from "#libs/tracing";
import { TypedClient } from "#libs/ttrpc/typed";
import type { ClientRequest, ClientResponse, MethodOfKind } from "#libs/proto/types";
import type { Bundle } from "./bundle";
import type { BootstrapResult } from "./binary";
import type { ShimCommand } from "./runtimes";

export const TASK_V2 = "containerd.task.v2.Task";
export const TASK_V3 = "containerd.task.v3.Task";
/** The messages of the shim task API (v3; v2 has the same ones under another package). */
type TaskApi = typeof TASK_V3;

/** Copies the shim's log FIFO (JSON lines or text) into the tasks process's log. */
export class ShimLog {
  private sock?: net.Socket;
  private partial = "";

  constructor(file: string, private readonly log: Logger) {
    let fd: number;
    try {
      fd = fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
    } catch {
      return;
    }
    this.sock = new net.Socket({ fd, readable: true, writable: false });
    this.sock.on("error", () => undefined);
    this.sock.on("data", (b: Buffer) => this.onData(b));
  }

  private onData(b: Buffer): void {
    const lines = (this.partial + b.toString()).split("\n");
    this.partial = lines.pop() ?? "";
    if (this.partial.length > 65536) this.partial = "";
    for (const l of lines) {
      if (!l.trim()) continue;
      try {
        const j = JSON.parse(l) as Record<string, unknown> & { level?: string; msg?: string };
        const { level, msg, time: _t, ...rest } = j;
        const lvl = level === "error" || level === "warn" || level === "debug" ? level : "info";
        this.log[lvl]({ shimLog: rest }, String(msg ?? ""));
      } catch {
        this.log.info({ shimLog: true }, l);
      }
    }
  }

  close(): void {
    this.sock?.destroy();
    this.sock = undefined;
  }
}

export class ShimTask {
  /** True once we closed the connection on purpose (no dead-shim cleanup then). */
  closing = false;
  shimPid = 0;
  /** How the shim was reached (shared by every task a grouped shim serves). */
  boot?: BootstrapResult;
  /** The shim group (containerd's group annotation), when the task shares its shim on purpose. */
  group = "";
  /** Taken from the warm pool (it may go back there once its task is deleted). */
  pooled = false;
  /** The trace context its calls carry (see withTrace). */
  private trace?: Context;

  private constructor(
    readonly namespace: string,
    readonly id: string,
    readonly bundle: Bundle,
    readonly cmd: ShimCommand,
    readonly client: TtrpcClient,
    private task: TypedClient<TaskApi>,
    readonly version: 2 | 3,
    readonly shimLog: ShimLog,
  ) {}

  /**
   * Dial the shim and pick the task API version with Connect (v3 first when the shim offers it).
   * `onClose` runs when the connection drops for any reason. `existing`: a connection already open
   * (a warm shim; with its pid, Flotilla's own shim, known to serve v3).
   */
  static async connect(
    ns: string,
    id: string,
    bundle: Bundle,
    cmd: ShimCommand,
    boot: BootstrapResult,
    log: Logger,
    onClose: (t: ShimTask) => void,
    retryMs = 10_000,
    existing?: { client: TtrpcClient; pid?: number },
  ): Promise<ShimTask> {
    let self: ShimTask | undefined;
    const client = existing?.client ?? (await TtrpcClient.connect(boot.address, { retryMs }));
    client.onClose(() => self && onClose(self));
    const shimLog = new ShimLog(bundle.file("log"), log.child({ shim: id, namespace: ns }));
    if (existing?.pid && boot.version >= 3) {
      // A warm shim of ours: its API version and pid are known, no Connect round trip needed.
      self = new ShimTask(ns, id, bundle, cmd, client, new TypedClient(client, TASK_V3), 3, shimLog);
      self.shimPid = existing.pid;
      self.boot = boot;
      self.pooled = true;
      if (!client.isOpen) onClose(self);
      return self;
    }
    try {
      const md = { [NAMESPACE_KEY]: [ns] };
      let version: 2 | 3 = 2;
      // v2 and v3 share their messages (only the package differs): one typed client, two wire names.
      let task = new TypedClient(client, TASK_V3, TASK_V2);
      let resp: ClientResponse<TaskApi, "Connect"> | undefined;
      if (boot.version >= 3) {
        const v3 = new TypedClient(client, TASK_V3);
        try {
          resp = await v3.call("Connect", { id }, { timeoutMs: 5000, metadata: md });
          version = 3;
          task = v3;
        } catch (e) {
          if (!isNotImplemented(e)) throw e;
        }
      }
      if (!resp) resp = await task.call("Connect", { id }, { timeoutMs: 5000, metadata: md });
      self = new ShimTask(ns, id, bundle, cmd, client, task, version, shimLog);
      self.shimPid = Number(resp.shim_pid ?? 0);
      self.boot = boot;
      if (!client.isOpen) onClose(self);
      return self;
    } catch (e) {
      client.close();
      shimLog.close();
      throw e;
    }
  }

  /**
   * This task as seen by one call: its requests carry the call's trace context (`traceparent` in the
   * ttrpc metadata, as containerd's otelttrpc interceptor sends it), so the events they cause in the
   * shim carry it too.
   */
  withTrace(trace: Context): ShimTask {
    const view = Object.create(this) as ShimTask;
    view.trace = trace;
    return view;
  }

  /** Call the shim's task API for this task (its id is filled in). */
  call<M extends MethodOfKind<TaskApi, "unary">>(method: M, req: Omit<ClientRequest<TaskApi, M>, "id">, timeoutMs?: number, signal?: AbortSignal): Promise<ClientResponse<TaskApi, M>> {
    const metadata: Metadata = { [NAMESPACE_KEY]: [this.namespace] };
    if (this.trace) injectIntoHeaders(this.trace, metadataCarrier(metadata));
    return this.task.call(method, { id: this.id, ...req } as ClientRequest<TaskApi, M>, { timeoutMs, signal, metadata });
  }

  /** Close the connection on purpose. */
  close(): void {
    this.closing = true;
    this.client.close();
    this.shimLog.close();
  }
}
