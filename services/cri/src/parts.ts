/**
 * The contract between the CRI's parts: pods (sandboxes), containers, images and streaming, each built
 * by its own factory (`createPods`, `createContainers`, `createImages`, `createStreaming`) from the same
 * dependencies and composed in `service.ts`. Each RPC method takes the decoded request and returns the
 * response as the generated proto types describe them (the gRPC adapters in `server/` only delegate).
 */
import type { Logger } from "pino";
import type { CallContext } from "#libs/context";
import type { ServiceName } from "#libs/config";
import type { Channel } from "#libs/grpc/client";
import type { EventPublisher } from "#libs/events";
import { CRI_IMAGE_SERVICE, CRI_RUNTIME_SERVICE } from "#libs/clients/cri";
import type { MethodName, ServerRequest, ServerResponse } from "#libs/proto/types";
import type { CriConfig } from "./config";
import type { ContainerConfig, ContainerRecord, CriStore, PodRecord, PodSandboxConfig } from "./store";

export type { ContainerConfig, ContainerRecord, CriConfig, CriStore, PodRecord, PodSandboxConfig };
export { NamespaceMode } from "./store";

export const RUNTIME_SERVICE = CRI_RUNTIME_SERVICE;
export const IMAGE_SERVICE = CRI_IMAGE_SERVICE;
type RT = typeof RUNTIME_SERVICE;
type IS = typeof IMAGE_SERVICE;

/** One RPC of the RuntimeService or ImageService, typed from the proto. */
export type RuntimeRpc<M extends MethodName<RT>> = (ctx: CallContext, req: ServerRequest<RT, M>) => Promise<ServerResponse<RT, M>>;
export type ImageRpc<M extends MethodName<IS>> = (ctx: CallContext, req: ServerRequest<IS, M>) => Promise<ServerResponse<IS, M>>;

/** containerd's CRI keeps everything (images, containers, tasks, sandboxes) in this namespace. */
export const CRI_NAMESPACE = "k8s.io";

/** Labels and annotations containerd's CRI sets. */
export const CRI_LABELS = {
  /** `sandbox` or `container` on the containerd container records. */
  kind: "io.cri-containerd.kind",
  /** The image reference the CRI resolved (on images in k8s.io). */
  imageRef: "io.cri-containerd.image",
  /** On containers and the pause container: the pod's id. */
  sandboxId: "io.kubernetes.cri.sandbox-id",
  containerType: "io.kubernetes.cri.container-type",
  sandboxName: "io.kubernetes.cri.sandbox-name",
  sandboxNamespace: "io.kubernetes.cri.sandbox-namespace",
  sandboxUid: "io.kubernetes.cri.sandbox-uid",
  sandboxLogDir: "io.kubernetes.cri.sandbox-log-directory",
  containerName: "io.kubernetes.cri.container-name",
  imageName: "io.kubernetes.cri.image-name",
} as const;

/** An image as the images part resolves it for container creation. */
export interface ImageRecord {
  /** `sha256:<config digest>` (the CRI image id). */
  id: string;
  /** The image's references (upstream names) and digests. */
  repoTags: string[];
  repoDigests: string[];
  /** The containerd image name to use (in k8s.io). */
  name: string;
  /** The image's target (manifest) digest. */
  target: { mediaType: string; digest: string; size: number };
  /** The image config (OCI `config` object: Env, Cmd, Entrypoint, WorkingDir, User, ...). */
  config: Record<string, unknown>;
  /** The chain id of the top layer: the parent of a container's snapshot. */
  chainId: string;
  snapshotter: string;
  size: number;
}

/** What every part is built from. */
export interface CriDeps {
  config: CriConfig;
  log: Logger;
  /** The channel to another Flotilla process (through `libs/clients` proxies). */
  channel(svc: ServiceName): Channel;
  store: CriStore;
  events: EventPublisher;
  /** This process's persistent and runtime directories (`<root>/cri`, `<state>/cri`). */
  root: string;
  state: string;
  /** Aborted when the process stops. */
  stopping: AbortSignal;
}

export interface PodsPart {
  run: RuntimeRpc<"RunPodSandbox">;
  stop: RuntimeRpc<"StopPodSandbox">;
  remove: RuntimeRpc<"RemovePodSandbox">;
  status: RuntimeRpc<"PodSandboxStatus">;
  list: RuntimeRpc<"ListPodSandbox">;
  stats: RuntimeRpc<"PodSandboxStats">;
  listStats: RuntimeRpc<"ListPodSandboxStats">;
  /** A pod's record (NotFound when none); for the containers and streaming parts. Accepts a unique id prefix. */
  get(podId: string): Promise<PodRecord>;
  /** After a restart: settle half-made pods, re-check running ones. */
  recover(): Promise<void>;
  close(): Promise<void>;
}

/**
 * The containers of a pod run as containerd containers in `k8s.io` with `sandbox` = the pod's id and the
 * annotation `io.kubernetes.cri.sandbox-id` = the pod's id: the podsandbox controller then stops them
 * with the pod (Stop) and removes them (Shutdown), and they share the pod's shim. They join the pod's
 * namespaces through `/proc/<PodRecord.pid>/ns/*` (net only when the pod has its own: `netns`).
 */
export interface ContainersPart {
  create: RuntimeRpc<"CreateContainer">;
  start: RuntimeRpc<"StartContainer">;
  stop: RuntimeRpc<"StopContainer">;
  remove: RuntimeRpc<"RemoveContainer">;
  status: RuntimeRpc<"ContainerStatus">;
  list: RuntimeRpc<"ListContainers">;
  updateResources: RuntimeRpc<"UpdateContainerResources">;
  reopenLog: RuntimeRpc<"ReopenContainerLog">;
  stats: RuntimeRpc<"ContainerStats">;
  listStats: RuntimeRpc<"ListContainerStats">;
  /** Stop (SIGKILL) every container of a pod, for StopPodSandbox; `timeoutSecs` grace first. */
  stopPodContainers(podId: string, timeoutSecs: number): Promise<void>;
  /** Remove every container of a pod, for RemovePodSandbox. */
  removePodContainers(podId: string): Promise<void>;
  /** The fan-out of each container's output to attach sessions. */
  io: ContainerIOHub;
  recover(): Promise<void>;
  close(): Promise<void>;
}

export interface ImagesPart {
  list: ImageRpc<"ListImages">;
  status: ImageRpc<"ImageStatus">;
  pull: ImageRpc<"PullImage">;
  remove: ImageRpc<"RemoveImage">;
  fsInfo: ImageRpc<"ImageFsInfo">;
  /** An image by reference, id or digest (NotFound when not pulled); for container creation. */
  resolve(ref: string): Promise<ImageRecord>;
  /** The image, pulled first when absent (containerd's ensureImageExists: the sandbox image of RunPodSandbox). */
  ensure(ctx: CallContext, ref: string): Promise<ImageRecord>;
  close(): Promise<void>;
}

export interface StreamingPart {
  start(): Promise<void>;
  stop(): Promise<void>;
  execSync: RuntimeRpc<"ExecSync">;
  exec: RuntimeRpc<"Exec">;
  attach: RuntimeRpc<"Attach">;
  portForward: RuntimeRpc<"PortForward">;
}

export interface ContainerIOHub {
  attach(
    containerId: string,
    s: { stdin?: NodeJS.ReadableStream; stdout?: NodeJS.WritableStream; stderr?: NodeJS.WritableStream; tty: boolean; signal: AbortSignal },
  ): Promise<void>;
}
