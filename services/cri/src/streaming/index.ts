/**
 * The streaming part: the streaming server (exec, attach and port-forward over SPDY and websocket,
 * ./server.ts) and the ExecSync, Exec, Attach and PortForward RPCs, as containerd's CRI serves them.
 * Exec processes run through the tasks service with FIFOs this process opens (./exec.ts); attach goes
 * through the containers part's IO hub; port-forward dials the port inside the pod's network
 * namespace (./netns.ts).
 */
import { Writable, type Duplex } from "node:stream";
import * as path from "node:path";
import { background, withNamespace, type CallContext } from "#libs/context";
import { ContainerStoreProxy } from "#libs/clients/containers";
import { TaskServiceProxy } from "#libs/clients/tasks";
import { parseDuration } from "#libs/config/schema";
import { TaskStatus } from "#libs/core/tasks";
import { errFailedPrecondition, isNotFound } from "#libs/errdefs";
import { CRI_LABELS, CRI_NAMESPACE, NamespaceMode, type ContainerIOHub, type ContainersPart, type CriDeps, type PodsPart, type StreamingPart } from "../parts";
import { execInContainer, type ExecDeps } from "./exec";
import { dialPod, splice } from "./netns";
import { ExitCodeError, type CommandIO } from "./remotecommand";
import { StreamServer, type AttachRequest, type ExecRequest, type StreamRuntime } from "./server";

/** How long a client has to open the streams of a request (the kubelet's default). */
const STREAM_CREATION_TIMEOUT_MS = 30_000;

/** Collects what is written into one buffer. */
class Collect extends Writable {
  private readonly chunks: Buffer[] = [];

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: () => void): void {
    this.chunks.push(chunk);
    cb();
  }

  get data(): Buffer {
    return Buffer.concat(this.chunks);
  }
}

export function createStreaming(deps: CriDeps, others: { pods: PodsPart; containers: ContainersPart; io: ContainerIOHub }): StreamingPart {
  const tasks = new TaskServiceProxy(deps.channel("tasks"));
  const containers = new ContainerStoreProxy(deps.channel("tasks"));
  const execDeps: ExecDeps = { tasks, containers, fifoDir: path.join(deps.state, "exec") };
  const k8s = (ctx?: CallContext): CallContext => (ctx ? withNamespace(ctx, CRI_NAMESPACE) : background(CRI_NAMESPACE));

  /**
   * The full id of a CRI container (a unique prefix will do), from the CRI store, else, as containerd's
   * CRI recovers them, a container record of k8s.io labelled `io.cri-containerd.kind=container`.
   */
  async function criContainerId(ctx: CallContext, id: string, what: string): Promise<string> {
    try {
      return deps.store.containers.get(id).id;
    } catch (e) {
      if (!isNotFound(e)) throw e;
      const c = id ? await containers.get(k8s(ctx), id).catch(() => undefined) : undefined;
      if (c?.labels[CRI_LABELS.kind] === "container") return c.id;
      throw Object.assign(e as Error, { message: `${what}: ${(e as Error).message}` });
    }
  }

  /** The container's full id, if its task runs; containerd's CRI error otherwise. */
  async function runningContainer(ctx: CallContext, id: string, what: string): Promise<string> {
    const full = await criContainerId(ctx, id, what);
    let state = "CONTAINER_CREATED";
    try {
      const t = await tasks.get(k8s(ctx), full);
      state = t.status === TaskStatus.Running ? "CONTAINER_RUNNING" : t.status === TaskStatus.Stopped ? "CONTAINER_EXITED" : t.status === TaskStatus.Created ? "CONTAINER_CREATED" : "CONTAINER_UNKNOWN";
    } catch (e) {
      if (!isNotFound(e)) throw e;
    }
    if (state !== "CONTAINER_RUNNING") throw errFailedPrecondition(`container is in ${state} state`);
    return full;
  }

  const runtime: StreamRuntime = {
    async exec(req: ExecRequest, io: CommandIO): Promise<void> {
      const ctx = k8s();
      const id = await runningContainer(ctx, req.containerId, "failed to find exec container");
      const code = await execInContainer(execDeps, ctx, id, { cmd: req.cmd, tty: req.tty, stdin: io.stdin, stdout: io.stdout, stderr: io.stderr, onResize: io.onResize, signal: io.signal });
      if (code !== 0) throw new ExitCodeError(code, `error executing command [${req.cmd.join(" ")}], exit code ${code}`);
    },
    async attach(req: AttachRequest, io: CommandIO): Promise<void> {
      const ctx = k8s();
      const id = await runningContainer(ctx, req.containerId, `failed to find container "${req.containerId}" in store`);
      if (req.tty) io.onResize((s) => void tasks.resizePty(ctx, id, "", s.width, s.height).catch(() => undefined));
      await others.io.attach(id, { stdin: io.stdin, stdout: io.stdout, stderr: io.stderr, tty: req.tty, signal: io.signal });
    },
    async portForward(podId: string, port: number, data: Duplex): Promise<void> {
      const pod = await others.pods.get(podId);
      const host = pod.namespaces.network === NamespaceMode.NODE;
      if (!host && !pod.netns) throw errFailedPrecondition(`network namespace for sandbox "${pod.id}" is closed`);
      const conn = await dialPod(host ? "" : pod.netns, port);
      try {
        await splice(data, conn);
      } finally {
        conn.destroy();
      }
    },
  };

  const server = new StreamServer(
    {
      address: deps.config.stream_server_address,
      port: deps.config.stream_server_port,
      idleMs: parseDuration(deps.config.stream_idle_timeout) ?? 4 * 3600_000,
      streamCreationMs: STREAM_CREATION_TIMEOUT_MS,
    },
    runtime,
  );

  return {
    start: () => server.start(),
    stop: () => server.stop(),

    async execSync(ctx, req) {
      const stdout = new Collect();
      const stderr = new Collect();
      try {
        const id = await runningContainer(k8s(ctx), req.container_id, "failed to find exec container");
        const code = await execInContainer(execDeps, k8s(ctx), id, { cmd: req.cmd, tty: false, stdout, stderr, timeoutMs: Number(req.timeout) * 1000, signal: ctx.signal });
        return { stdout: stdout.data, stderr: stderr.data, exit_code: code };
      } catch (e) {
        throw Object.assign(e as Error, { message: `failed to exec in container: ${(e as Error).message}` });
      }
    },

    async exec(ctx, req) {
      const id = await runningContainer(k8s(ctx), req.container_id, `failed to find container "${req.container_id}" in store`);
      return { url: server.getExec({ containerId: id, cmd: req.cmd, tty: req.tty, stdin: req.stdin, stdout: req.stdout, stderr: req.stderr }) };
    },

    async attach(ctx, req) {
      const id = await runningContainer(k8s(ctx), req.container_id, "failed to find container in store");
      return { url: server.getAttach({ containerId: id, tty: req.tty, stdin: req.stdin, stdout: req.stdout, stderr: req.stderr }) };
    },

    async portForward(_ctx, req) {
      const pod = await others.pods.get(req.pod_sandbox_id).catch((e: unknown) => {
        throw Object.assign(e as Error, { message: `failed to find sandbox "${req.pod_sandbox_id}": ${(e as Error).message}` });
      });
      if (pod.state !== "ready") throw errFailedPrecondition("sandbox container is not running");
      return { url: server.getPortForward({ podSandboxId: pod.id, ports: req.port }) };
    },
  };
}
