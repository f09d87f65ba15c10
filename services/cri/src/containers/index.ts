/**
 * The CRI containers part: CreateContainer, StartContainer, StopContainer, RemoveContainer,
 * ListContainers, ContainerStatus, UpdateContainerResources, ReopenContainerLog, ContainerStats and
 * ListContainerStats, on the containers, tasks and snapshots services (namespace `k8s.io`), as
 * containerd 1.6's CRI does them. A container's snapshot is prepared from its image's chain id at
 * create; its task is created at start in the pod's sandbox (the container record's `sandbox` field and
 * the sandbox-id annotation group it with the pod), with stdio FIFOs this process reads into the CRI log
 * file (`ContainerIO`). The exit of each running task is awaited (Tasks.Wait) and recorded; the task is
 * then deleted, as containerd's CRI does.
 */
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { background, type CallContext } from "#libs/context";
import { errFailedPrecondition, errInvalidArgument, errorCode, ErrorCodes } from "#libs/errdefs";
import { ContainerStoreProxy } from "#libs/clients/containers";
import { TaskServiceProxy } from "#libs/clients/tasks";
import { SnapshotterSetProxy } from "#libs/clients/snapshots";
import { LeaseManagerProxy } from "#libs/clients/leases";
import { Labels } from "#libs/oci";
import { OCI_SPEC_TYPE_URL } from "#libs/core/containers";
import { TaskStatus, type TaskMetric } from "#libs/core/tasks";
import type { Mount } from "#libs/core/snapshots";
import type { Decoded, Input } from "#libs/proto/types";
import { nowNanos } from "#libs/time";
import { unpackAny } from "#libs/proto";
import { CRI_LABELS, CRI_NAMESPACE, NamespaceMode, type ContainerIOHub, type ContainerRecord, type ContainersPart, type CriDeps, type ImagesPart, type PodsPart, type PodRecord } from "../parts";
import { applyResources, buildContainerSpec, oomScoreAdj, type ImageRunConfig, type OciResources, type OciSpec } from "./spec";
import { hostSpecFacts } from "./host";
import { cgroupUsage } from "../stats";
import { rootfsFromMounts } from "./users";
import { ContainerIO, fifoPaths, makeFifos } from "./io";

/** runtime.v1.ContainerState */
export const ContainerState = { CREATED: 0, RUNNING: 1, EXITED: 2, UNKNOWN: 3 } as const;
const STATE_NAMES = ["CONTAINER_CREATED", "CONTAINER_RUNNING", "CONTAINER_EXITED", "CONTAINER_UNKNOWN"];

/** What this part keeps in each container record, besides A's fields. */
interface CtrState {
  state: number;
  /** The CRI image id (`sha256:<config digest>`) and the containerd image name. */
  imageRef: string;
  imageName: string;
  /** The full log path ("" = no logging). */
  logPath: string;
  stopSignal: string;
  snapshotter: string;
  pid: number;
  startedAt: bigint;
  finishedAt: bigint;
  exitCode: number;
  reason: string;
  message: string;
  /** The resources the spec was made with (and updated with UpdateContainerResources). */
  resources: Decoded["runtime.v1.LinuxContainerResources"] | null;
  fifoDir: string;
  runtimeName: string;
  removing?: boolean;
  /** Set until CreateContainer finished: a record left so by a crash is undone at recovery. */
  creating?: boolean;
}
type Rec = ContainerRecord & CtrState;

const SIGNALS: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGKILL: 9, SIGUSR1: 10, SIGUSR2: 12, SIGTERM: 15, SIGSTOP: 19, SIGWINCH: 28 };

/** An image's StopSignal (`SIGTERM`, `TERM`, `15`) as a number; SIGTERM when empty. */
export function signalNumber(s: string): number {
  if (!s) return 15;
  if (/^\d+$/.test(s)) return Number(s);
  const up = s.toUpperCase();
  const n = SIGNALS[up.startsWith("SIG") ? up : `SIG${up}`];
  if (!n) throw errInvalidArgument(`unsupported signal ${JSON.stringify(s)}`);
  return n;
}

/** containerd's CRI container labels: the image's, then the kubelet's, then the kind. */
function containerLabels(config: Record<string, string> | null | undefined, image: Record<string, string> | null | undefined): Record<string, string> {
  return { ...(image ?? {}), ...(config ?? {}), [CRI_LABELS.kind]: "container" };
}

function matchLabels(labels: Record<string, string>, selector: Record<string, string> | null | undefined): boolean {
  return Object.entries(selector ?? {}).every(([k, v]) => labels[k] === v);
}

const ns = (v: bigint | number | undefined): string => String(v ?? 0);

/**
 * Where the part reports its containers' lifecycle for GetContainerEvents (containerd 1.7's CRI events:
 * created, started, stopped, deleted, with the container's status); optional until it is wired.
 */
export interface ContainerEventSink {
  emit(e: { containerId: string; kind: "created" | "started" | "stopped" | "deleted"; containersStatuses?: Input["runtime.v1.ContainerStatus"][] }): void;
}

export function createContainers(deps: CriDeps, others: { pods: PodsPart; images: ImagesPart; events?: ContainerEventSink }): ContainersPart {
  const { store, config, log } = deps;
  const containers = new ContainerStoreProxy(deps.channel("tasks"));
  const tasks = new TaskServiceProxy(deps.channel("tasks"));
  const snapshots = new SnapshotterSetProxy(deps.channel("snapshots"));
  const leases = new LeaseManagerProxy(deps.channel("images"));
  const host = hostSpecFacts();
  const ctxK8s = (): CallContext => background(CRI_NAMESPACE);
  const ios = new Map<string, ContainerIO>();
  /** Settles when the task's exit is recorded. */
  const exits = new Map<string, Promise<void>>();
  const prevCpu = new Map<string, { ts: bigint; usage: number }>();
  /** Aborted by close(): the exit watchers of this part stop (a new part recovers them). */
  const closed = new AbortController();
  const containerDir = (id: string): string => path.join(deps.state, "containers", id);

  const rec = (id: string): Rec => store.containers.get(id) as Rec;

  async function recordExit(id: string, exitStatus: number, exitedAt: Date): Promise<void> {
    const at = exitedAt.getTime() > 0 ? BigInt(exitedAt.getTime()) * 1_000_000n : nowNanos();
    await store.containers
      .update(id, (r) => {
        const c = r as Rec;
        if (c.state === ContainerState.EXITED) return;
        c.state = ContainerState.EXITED;
        c.pid = 0;
        c.exitCode = exitStatus;
        c.finishedAt = at;
        if (!c.reason) c.reason = exitStatus === 0 ? "Completed" : "Error";
      })
      .catch((e) => {
        if (errorCode(e) !== ErrorCodes.NotFound) throw e;
      });
  }

  /** Await the task's exit in the background, record it, let the output drain and delete the task. */
  function watch(id: string): Promise<void> {
    let p = exits.get(id);
    if (p) return p;
    p = (async () => {
      const ctx = ctxK8s();
      try {
        const exit = await tasks.wait({ ...ctx, signal: closed.signal }, id);
        if (closed.signal.aborted) return;
        // The task's cgroup is there until the task is deleted: did the kernel's OOM killer end it?
        if (exit.exitStatus !== 0 && oomKilled((await metricsFor([id])).get(id))) {
          await store.containers.update(id, (r) => void ((r as Rec).reason = "OOMKilled")).catch(() => undefined);
        }
        const io = ios.get(id);
        if (io) await Promise.race([io.wait(), new Promise((r) => setTimeout(r, 2000).unref())]);
        await recordExit(id, exit.exitStatus, exit.exitedAt);
        await emit(id, "stopped");
      } catch (e) {
        if (closed.signal.aborted) return;
        if (errorCode(e) !== ErrorCodes.NotFound) {
          if (deps.stopping.aborted) return;
          log.warn({ err: e, id }, "cri: waiting for a container's task failed");
        }
        await recordExit(id, 255, new Date(0));
        await store.containers.update(id, (r) => void ((r as Rec).reason ||= "Unknown")).catch(() => undefined);
      }
      await tasks.delete(ctx, id).catch(() => undefined);
      const io = ios.get(id);
      if (io) {
        ios.delete(id);
        await io.close();
      }
    })();
    exits.set(id, p);
    return p;
  }

  function openIO(r: Rec): ContainerIO {
    let io = ios.get(r.id);
    if (io) return io;
    const f = fifoPaths(r.fifoDir, r.id, !!r.config.stdin, !!r.config.tty);
    makeFifos(r.fifoDir, f);
    io = new ContainerIO(r.id, f, r.logPath, config.max_container_log_line_size, {
      once: !!r.config.stdin_once,
      closeStdin: () => tasks.closeIO(ctxK8s(), r.id, "", true),
    });
    ios.set(r.id, io);
    return io;
  }

  function podFilesOf(pod: PodRecord): { hostname: string; hosts: string; resolvConf: string; shm: string } {
    return { hostname: fs.existsSync(pod.hostnamePath) ? pod.hostnamePath : "", hosts: pod.hostsPath, resolvConf: pod.resolvPath, shm: pod.shmPath };
  }

  async function create(ctx: CallContext, req: Decoded["runtime.v1.CreateContainerRequest"]): Promise<Input["runtime.v1.CreateContainerResponse"]> {
    const cfg = req.config;
    if (!cfg) throw errInvalidArgument("container config must not be nil");
    const meta = cfg.metadata;
    if (!meta) throw errInvalidArgument("container config must include metadata");
    const pod = await others.pods.get(req.pod_sandbox_id);
    if (pod.state !== "ready" || !pod.pid) throw errFailedPrecondition(`failed to get sandbox container task: no running task found: sandbox ${JSON.stringify(pod.id)} is not ready`);
    const podCfg = req.sandbox_config ?? pod.config;
    const pm = pod.config.metadata;
    const name = [meta.name, pm?.name ?? "", pm?.namespace ?? "", pm?.uid ?? "", String(meta.attempt ?? 0)].join("_");
    const image = await others.images.resolve(cfg.image?.image ?? "");
    const imgCfg = image.config as ImageRunConfig;
    const id = crypto.randomBytes(32).toString("hex");
    const r: Rec = {
      id, podId: pod.id, name, config: cfg, createdAt: nowNanos(),
      state: ContainerState.CREATED, imageRef: image.id, imageName: image.name,
      logPath: pod.config.log_directory && cfg.log_path ? path.join(pod.config.log_directory, cfg.log_path) : "",
      stopSignal: imgCfg.StopSignal ?? "", snapshotter: image.snapshotter || config.containerd.snapshotter,
      pid: 0, startedAt: 0n, finishedAt: 0n, exitCode: 0, reason: "", message: "",
      resources: cfg.linux?.resources ?? null, fifoDir: path.join(containerDir(id), "io"), runtimeName: pod.runtimeName, creating: true,
    };
    // The name first: a second container of the same name fails before anything is made.
    await store.containers.add(r);
    const k8s = { ...ctx, namespace: CRI_NAMESPACE };
    const sn = snapshots.get(r.snapshotter);
    let snapshot = false;
    let record = false;
    // A lease holds the new snapshot against garbage collection until the container record refers to it.
    let lease = "";
    try {
      lease = (await leases.create(k8s, { labels: { [Labels.gcExpire]: new Date(Date.now() + 3600_000).toISOString() } })).id;
      const mounts = await sn.prepare({ ...k8s, lease }, id, image.chainId, { labels: {} });
      snapshot = true;
      let targetPid: number | undefined;
      const nsOpts = cfg.linux?.security_context?.namespace_options;
      if (nsOpts?.pid === NamespaceMode.TARGET) {
        const t = store.containers.find(nsOpts.target_id) as Rec | undefined;
        if (!t || t.podId !== pod.id) throw errInvalidArgument(`invalid target container: container ${JSON.stringify(nsOpts.target_id)} does not exist in sandbox ${JSON.stringify(pod.id)}`);
        if (t.state !== ContainerState.RUNNING) throw errFailedPrecondition(`invalid target container: container ${JSON.stringify(t.id)} is not running`);
        targetPid = t.pid;
      }
      const runtime = config.containerd.runtimes[pod.runtimeHandler || config.containerd.default_runtime_name];
      const spec = buildContainerSpec(
        {
          id, sandboxId: pod.id, sandboxPid: pod.pid, ...(targetPid ? { targetPid } : {}),
          config: cfg, sandboxConfig: podCfg, image: imgCfg, imageName: image.name,
          podFiles: podFilesOf(pod), extraMounts: imageVolumes(imgCfg, cfg, containerDir(id)),
          rootfs: rootfsFromMounts(mounts),
          options: {
            restrictOomScoreAdj: config.restrict_oom_score_adj, disableCgroup: config.disable_cgroup,
            ...(runtime ? { podAnnotations: runtimeList(runtime.options, "pod_annotations"), containerAnnotations: runtimeList(runtime.options, "container_annotations") } : {}),
          },
        },
        host,
      );
      await containers.create(k8s, {
        id,
        labels: containerLabels(cfg.labels, imgCfg.Labels),
        image: image.name,
        runtime: { name: pod.runtimeName },
        spec: { typeUrl: OCI_SPEC_TYPE_URL, value: Buffer.from(JSON.stringify(spec)) },
        snapshotter: r.snapshotter,
        snapshotKey: id,
        sandbox: pod.id,
      });
      record = true;
      await store.containers.update(id, (x) => void delete (x as Rec).creating);
      makeFifos(r.fifoDir, fifoPaths(r.fifoDir, id, !!cfg.stdin, !!cfg.tty));
      await emit(id, "created");
      return { container_id: id };
    } catch (e) {
      if (record) await containers.delete(k8s, id).catch(() => undefined);
      if (snapshot) await sn.remove(k8s, id).catch(() => undefined);
      fs.rmSync(containerDir(id), { recursive: true, force: true });
      await store.containers.delete(id);
      throw e;
    } finally {
      if (lease) await leases.delete(k8s, lease).catch((e) => log.warn({ err: e, lease }, "cri: deleting a container's creation lease"));
    }
  }

  async function start(ctx: CallContext, req: Decoded["runtime.v1.StartContainerRequest"]): Promise<Input["runtime.v1.StartContainerResponse"]> {
    const r = rec(req.container_id);
    if (r.state !== ContainerState.CREATED) throw errFailedPrecondition(`container is in ${STATE_NAMES[r.state]} state`);
    const pod = await others.pods.get(r.podId);
    if (pod.state !== "ready") throw errFailedPrecondition(`sandbox container ${JSON.stringify(pod.id)} is not running`);
    const k8s = { ...ctx, namespace: CRI_NAMESPACE };
    const io = openIO(r);
    const fail = async (e: unknown): Promise<never> => {
      await store.containers
        .update(r.id, (x) => {
          const c = x as Rec;
          c.state = ContainerState.EXITED;
          c.exitCode = 128;
          c.finishedAt = nowNanos();
          c.reason = "StartError";
          c.message = (e as Error).message;
        })
        .catch(() => undefined);
      await tasks.delete(k8s, r.id).catch(() => undefined);
      ios.delete(r.id);
      await io.close();
      throw e;
    };
    let rootfs: Mount[];
    try {
      rootfs = await snapshots.get(r.snapshotter).mounts(k8s, r.id);
      await tasks.create(k8s, { containerId: r.id, rootfs, io: { stdin: io.fifos.stdin, stdout: io.fifos.stdout, stderr: io.fifos.stderr, terminal: io.fifos.terminal } });
      io.connected();
      const pid = await tasks.start(k8s, r.id);
      await store.containers.update(r.id, (x) => {
        const c = x as Rec;
        c.state = ContainerState.RUNNING;
        c.pid = pid;
        c.startedAt = nowNanos();
      });
    } catch (e) {
      return fail(e);
    }
    await emit(r.id, "started");
    void watch(r.id);
    return {};
  }

  /** Signal the container, wait `timeout` seconds for its exit, then SIGKILL it and wait again. */
  async function stopOne(id: string, timeoutSecs: number): Promise<void> {
    const r = rec(id);
    if (r.state !== ContainerState.RUNNING) return;
    const ctx = ctxK8s();
    const exited = watch(id);
    const kill = async (sig: number): Promise<void> => {
      try {
        await tasks.kill(ctx, id, sig);
      } catch (e) {
        if (errorCode(e) !== ErrorCodes.NotFound) throw e;
      }
    };
    if (timeoutSecs > 0) {
      await kill(signalNumber(r.stopSignal));
      let timer: NodeJS.Timeout | undefined;
      const timedOut = await Promise.race([exited.then(() => false), new Promise<boolean>((res) => (timer = setTimeout(() => res(true), timeoutSecs * 1000)))]);
      clearTimeout(timer);
      if (!timedOut) return;
    }
    await kill(9);
    await exited;
  }

  async function stop(_ctx: CallContext, req: Decoded["runtime.v1.StopContainerRequest"]): Promise<Input["runtime.v1.StopContainerResponse"]> {
    const r = rec(req.container_id);
    await stopOne(r.id, Number(req.timeout ?? 0));
    return {};
  }

  async function removeOne(id: string): Promise<void> {
    const r = store.containers.find(id) as Rec | undefined;
    if (!r) return;
    if (r.state === ContainerState.RUNNING) await stopOne(id, 0);
    await store.containers.update(id, (x) => void ((x as Rec).removing = true)).catch(() => undefined);
    const ctx = ctxK8s();
    const ignoreNotFound = (e: unknown): void => {
      if (errorCode(e) !== ErrorCodes.NotFound) throw e;
    };
    await tasks.delete(ctx, id).catch(ignoreNotFound);
    await containers.delete(ctx, id).catch(ignoreNotFound);
    await snapshots.get(r.snapshotter).remove(ctx, id).catch(ignoreNotFound);
    const io = ios.get(id);
    if (io) {
      ios.delete(id);
      await io.close();
    }
    exits.delete(id);
    prevCpu.delete(id);
    fs.rmSync(containerDir(id), { recursive: true, force: true });
    const last = others.events && !r.creating ? await criStatus((store.containers.find(id) as Rec | undefined) ?? r) : undefined;
    await store.containers.delete(id);
    if (last) others.events?.emit({ containerId: id, kind: "deleted", containersStatuses: [last] });
  }

  /** Tell the event sink, with the container's status now. */
  async function emit(id: string, kind: "created" | "started" | "stopped"): Promise<void> {
    if (!others.events) return;
    const r = store.containers.find(id) as Rec | undefined;
    if (r) others.events.emit({ containerId: id, kind, containersStatuses: [await criStatus(r)] });
  }

  async function remove(_ctx: CallContext, req: Decoded["runtime.v1.RemoveContainerRequest"]): Promise<Input["runtime.v1.RemoveContainerResponse"]> {
    let r: Rec;
    try {
      r = rec(req.container_id);
    } catch (e) {
      // Removing a container that is gone is not an error (the kubelet retries).
      if (errorCode(e) === ErrorCodes.NotFound) return {};
      throw e;
    }
    await removeOne(r.id);
    return {};
  }

  function imageSpec(r: Rec): Input["runtime.v1.ImageSpec"] {
    return { image: r.config.image?.image ?? "", annotations: r.config.image?.annotations ?? {} };
  }

  /** The CRI status of a container record (the image named by its first tag and digest when it is still there). */
  async function criStatus(r: Rec): Promise<Input["runtime.v1.ContainerStatus"]> {
    let imageName = r.config.image?.image ?? "";
    let imageRef = r.imageRef;
    try {
      const img = await others.images.resolve(r.imageRef);
      if (img.repoTags[0]) imageName = img.repoTags[0];
      if (img.repoDigests[0]) imageRef = img.repoDigests[0];
    } catch {
      /* the image may be gone: keep what was recorded */
    }
    const st: Input["runtime.v1.ContainerStatus"] = {
      id: r.id,
      metadata: r.config.metadata,
      state: r.state,
      created_at: ns(r.createdAt),
      started_at: ns(r.startedAt),
      finished_at: ns(r.finishedAt),
      exit_code: r.exitCode,
      image: { image: imageName, annotations: r.config.image?.annotations ?? {} },
      image_ref: imageRef,
      reason: r.reason,
      message: r.message,
      labels: r.config.labels ?? {},
      annotations: r.config.annotations ?? {},
      mounts: r.config.mounts ?? [],
      log_path: r.logPath,
      resources: r.resources ? { linux: r.resources } : null,
    };
    return st;
  }

  async function status(_ctx: CallContext, req: Decoded["runtime.v1.ContainerStatusRequest"]): Promise<Input["runtime.v1.ContainerStatusResponse"]> {
    const r = rec(req.container_id);
    const st = await criStatus(r);
    const info: Record<string, string> = {};
    if (req.verbose) {
      let spec: unknown;
      try {
        const c = await containers.get(ctxK8s(), r.id);
        if (c.spec) spec = JSON.parse(Buffer.from(c.spec.value).toString("utf8"));
      } catch {
        /* no record */
      }
      info.info = JSON.stringify({
        sandboxID: r.podId, pid: r.pid, removing: !!r.removing, snapshotKey: r.id, snapshotter: r.snapshotter,
        runtimeType: r.runtimeName, config: r.config, runtimeSpec: spec,
      });
    }
    return { status: st, info };
  }

  /** A container id or unique prefix to its id; "" when none matches. */
  const resolveId = (id: string): string => {
    try {
      return rec(id).id;
    } catch {
      return "";
    }
  };

  async function list(_ctx: CallContext, req: Decoded["runtime.v1.ListContainersRequest"]): Promise<Input["runtime.v1.ListContainersResponse"]> {
    const f = req.filter;
    let all = (store.containers.list() as Rec[]).filter((c) => !c.creating);
    if (f) {
      if (f.id) {
        const id = resolveId(f.id);
        all = all.filter((c) => c.id === id);
      }
      if (f.pod_sandbox_id) {
        let podId = f.pod_sandbox_id;
        try {
          podId = (await others.pods.get(f.pod_sandbox_id)).id;
        } catch {
          /* an unknown pod matches nothing */
        }
        all = all.filter((c) => c.podId === podId);
      }
      if (f.state) all = all.filter((c) => c.state === f.state!.state);
      all = all.filter((c) => matchLabels(c.config.labels ?? {}, f.label_selector));
    }
    return {
      containers: all.map((c) => ({
        id: c.id, pod_sandbox_id: c.podId, metadata: c.config.metadata, image: imageSpec(c), image_ref: c.imageRef,
        state: c.state, created_at: ns(c.createdAt), labels: c.config.labels ?? {}, annotations: c.config.annotations ?? {},
      })),
    };
  }

  async function updateResources(ctx: CallContext, req: Decoded["runtime.v1.UpdateContainerResourcesRequest"]): Promise<Input["runtime.v1.UpdateContainerResourcesResponse"]> {
    const r = rec(req.container_id);
    if (r.state !== ContainerState.CREATED && r.state !== ContainerState.RUNNING) throw errFailedPrecondition(`container ${JSON.stringify(r.id)} is in ${STATE_NAMES[r.state]} state`);
    const res = req.linux;
    if (!res) return {};
    const k8s = { ...ctx, namespace: CRI_NAMESPACE };
    const c = await containers.get(k8s, r.id);
    const spec = JSON.parse(Buffer.from(c.spec?.value ?? Buffer.from("{}")).toString("utf8")) as OciSpec;
    // containerd replaces the spec's CPU and memory settings by the new ones.
    const next: OciResources = {};
    applyResources(next, host, res, {});
    spec.linux.resources = { ...spec.linux.resources, cpu: next.cpu ?? {}, memory: next.memory ?? {}, ...(next.unified ? { unified: next.unified } : {}) };
    spec.process.oomScoreAdj = oomScoreAdj(res, host, config.restrict_oom_score_adj);
    await containers.update(k8s, { ...c, spec: { typeUrl: OCI_SPEC_TYPE_URL, value: Buffer.from(JSON.stringify(spec)) } }, ["spec"]);
    if (r.state === ContainerState.RUNNING) {
      await tasks.update(k8s, r.id, { typeUrl: "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources", value: Buffer.from(JSON.stringify(spec.linux.resources)) });
    }
    await store.containers.update(r.id, (x) => void ((x as Rec).resources = res));
    return {};
  }

  async function reopenLog(_ctx: CallContext, req: Decoded["runtime.v1.ReopenContainerLogRequest"]): Promise<Input["runtime.v1.ReopenContainerLogResponse"]> {
    const r = rec(req.container_id);
    const io = ios.get(r.id);
    if (r.state !== ContainerState.RUNNING || !io) throw errFailedPrecondition("container is not running");
    await io.log.reopen();
    return {};
  }

  async function statsOf(r: Rec, metric: TaskMetric | undefined): Promise<Input["runtime.v1.ContainerStats"]> {
    const now = nowNanos();
    const out: Input["runtime.v1.ContainerStats"] = {
      attributes: { id: r.id, metadata: r.config.metadata, labels: r.config.labels ?? {}, annotations: r.config.annotations ?? {} },
    };
    const ts = metric ? BigInt(metric.timestamp.getTime()) * 1_000_000n : now;
    const u = cgroupUsage(metric?.data, ts);
    if (u) {
      // usage_nano_cores: the CPU time used since the previous sample, per second.
      const total = Number(u.cpu.usage_core_nano_seconds?.value ?? 0);
      const prev = prevCpu.get(r.id);
      prevCpu.set(r.id, { ts, usage: total });
      const nanoCores = prev && ts > prev.ts ? Math.round(((total - prev.usage) * 1e9) / Number(ts - prev.ts)) : undefined;
      out.cpu = { ...u.cpu, ...(nanoCores !== undefined && nanoCores >= 0 ? { usage_nano_cores: { value: nanoCores } } : {}) };
      out.memory = u.memory;
    }
    try {
      const usage = await snapshots.get(r.snapshotter).usage(ctxK8s(), r.id);
      out.writable_layer = { timestamp: ns(now), fs_id: { mountpoint: path.join(path.dirname(deps.root), "snapshots", r.snapshotter) }, used_bytes: { value: usage.size }, inodes_used: { value: usage.inodes } };
    } catch {
      /* no snapshot (being removed) */
    }
    return out;
  }

  async function metricsFor(ids: string[]): Promise<Map<string, TaskMetric>> {
    const out = new Map<string, TaskMetric>();
    if (!ids.length) return out;
    try {
      for (const m of await tasks.metrics(ctxK8s(), ids.map((id) => `id==${id}`))) out.set(m.id, m);
    } catch (e) {
      log.debug({ err: e }, "cri: task metrics");
    }
    return out;
  }

  async function stats(_ctx: CallContext, req: Decoded["runtime.v1.ContainerStatsRequest"]): Promise<Input["runtime.v1.ContainerStatsResponse"]> {
    const r = rec(req.container_id);
    const m = await metricsFor(r.state === ContainerState.RUNNING ? [r.id] : []);
    return { stats: await statsOf(r, m.get(r.id)) };
  }

  async function listStats(_ctx: CallContext, req: Decoded["runtime.v1.ListContainerStatsRequest"]): Promise<Input["runtime.v1.ListContainerStatsResponse"]> {
    const f = req.filter;
    let all = (store.containers.list() as Rec[]).filter((c) => !c.creating);
    if (f?.id) {
      const id = resolveId(f.id);
      all = all.filter((c) => c.id === id);
    }
    if (f?.pod_sandbox_id) {
      let podId = f.pod_sandbox_id;
      try {
        podId = (await others.pods.get(f.pod_sandbox_id)).id;
      } catch {
        /* matches nothing */
      }
      all = all.filter((c) => c.podId === podId);
    }
    if (f) all = all.filter((c) => matchLabels(c.config.labels ?? {}, f.label_selector));
    const m = await metricsFor(all.filter((c) => c.state === ContainerState.RUNNING).map((c) => c.id));
    return { stats: await Promise.all(all.map((c) => statsOf(c, m.get(c.id)))) };
  }

  const io: ContainerIOHub = {
    async attach(containerId, s) {
      const r = rec(containerId);
      const cio = ios.get(r.id);
      if (r.state !== ContainerState.RUNNING || !cio) throw errFailedPrecondition(`container is in ${STATE_NAMES[r.state]} state`);
      await cio.attach(s);
    },
  };

  async function recover(): Promise<void> {
    const ctx = ctxK8s();
    for (const c of store.containers.list() as Rec[]) {
      if (c.removing || c.creating) {
        await removeOne(c.id).catch((e) => log.warn({ err: e, id: c.id }, "cri: finishing a container's removal"));
        continue;
      }
      if (c.state !== ContainerState.RUNNING) continue;
      let running = false;
      try {
        const t = await tasks.get(ctx, c.id);
        running = t.status === TaskStatus.Running || t.status === TaskStatus.Paused || t.status === TaskStatus.Created;
        if (!running) await recordExit(c.id, t.exitStatus, t.exitedAt ?? new Date(0));
      } catch (e) {
        if (errorCode(e) !== ErrorCodes.NotFound) throw e;
        await recordExit(c.id, 255, new Date(0));
        await store.containers.update(c.id, (x) => void ((x as Rec).reason ||= "Unknown")).catch(() => undefined);
      }
      if (running) {
        // The shim holds the FIFOs' write ends: read them again from here on.
        openIO(c).connected();
        void watch(c.id);
      } else await tasks.delete(ctx, c.id).catch(() => undefined);
    }
  }

  return {
    create, start, stop, remove, status, list, updateResources, reopenLog, stats, listStats, io, recover,
    async stopPodContainers(podId, timeoutSecs) {
      const mine = (store.containers.list() as Rec[]).filter((c) => c.podId === podId);
      await Promise.all(mine.map((c) => stopOne(c.id, timeoutSecs)));
    },
    async removePodContainers(podId) {
      const mine = (store.containers.list() as Rec[]).filter((c) => c.podId === podId);
      for (const c of mine) await removeOne(c.id);
    },
    async close() {
      closed.abort();
      for (const [id, cio] of ios) {
        ios.delete(id);
        await cio.close();
      }
    },
  };
}

/** Whether a task's cgroup metrics count an OOM kill. */
function oomKilled(m: TaskMetric | undefined): boolean {
  if (!m?.data) return false;
  const type = m.data.typeUrl.replace(/^.*\//, "");
  const any = { type_url: type, value: Buffer.from(m.data.value) };
  if (type === "io.containerd.cgroups.v1.Metrics") return Number(unpackAny<{ memory_oom_control?: { oom_kill?: number | string } }>(any).memory_oom_control?.oom_kill ?? 0) > 0;
  if (type === "io.containerd.cgroups.v2.Metrics") return Number(unpackAny<{ memory_events?: { oom_kill?: number | string } }>(any).memory_events?.oom_kill ?? 0) > 0;
  return false;
}

/** A string list from a runtime's options table (`pod_annotations`, `container_annotations`). */
function runtimeList(options: Record<string, unknown>, key: string): string[] {
  const v = options[key];
  return Array.isArray(v) ? v.map(String) : [];
}

/** The image's VOLUMEs the kubelet does not mount: each gets a fresh directory of the container's. */
function imageVolumes(img: ImageRunConfig, cfg: { mounts?: readonly { container_path?: string | null }[] | null }, dir: string): { container_path: string; host_path: string }[] {
  const out: { container_path: string; host_path: string }[] = [];
  for (const dst of Object.keys(img.Volumes ?? {})) {
    if ((cfg.mounts ?? []).some((m) => path.posix.normalize(m.container_path ?? "") === path.posix.normalize(dst))) continue;
    out.push({ container_path: dst, host_path: path.join(dir, "volumes", crypto.randomBytes(16).toString("hex")) });
  }
  return out;
}
