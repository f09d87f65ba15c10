/** gRPC adapters of runtime.v1.RuntimeService and runtime.v1.ImageService: each method delegates to its part. */
import { serviceHandlers, type ServiceHandlers } from "#libs/grpc/server";
import { IMAGE_SERVICE, RUNTIME_SERVICE, type ContainersPart, type ImagesPart, type PodsPart, type StreamingPart } from "../parts";
import type { RuntimeInfo } from "../runtime";
import type { CriEvents } from "../events";

export interface CriParts {
  runtime: RuntimeInfo;
  pods: PodsPart;
  containers: ContainersPart;
  images: ImagesPart;
  streaming: StreamingPart;
  events: CriEvents;
}

export function runtimeHandlers(p: CriParts): ServiceHandlers<typeof RUNTIME_SERVICE> {
  return serviceHandlers(RUNTIME_SERVICE, {
    Version: (ctx, req) => p.runtime.version(ctx, req),
    Status: (ctx, req) => p.runtime.status(ctx, req),
    UpdateRuntimeConfig: (ctx, req) => p.runtime.updateRuntimeConfig(ctx, req),
    RunPodSandbox: (ctx, req) => p.pods.run(ctx, req),
    StopPodSandbox: (ctx, req) => p.pods.stop(ctx, req),
    RemovePodSandbox: (ctx, req) => p.pods.remove(ctx, req),
    PodSandboxStatus: (ctx, req) => p.pods.status(ctx, req),
    ListPodSandbox: (ctx, req) => p.pods.list(ctx, req),
    PodSandboxStats: (ctx, req) => p.pods.stats(ctx, req),
    ListPodSandboxStats: (ctx, req) => p.pods.listStats(ctx, req),
    CreateContainer: (ctx, req) => p.containers.create(ctx, req),
    StartContainer: (ctx, req) => p.containers.start(ctx, req),
    StopContainer: (ctx, req) => p.containers.stop(ctx, req),
    RemoveContainer: (ctx, req) => p.containers.remove(ctx, req),
    ListContainers: (ctx, req) => p.containers.list(ctx, req),
    ContainerStatus: (ctx, req) => p.containers.status(ctx, req),
    UpdateContainerResources: (ctx, req) => p.containers.updateResources(ctx, req),
    ReopenContainerLog: (ctx, req) => p.containers.reopenLog(ctx, req),
    ContainerStats: (ctx, req) => p.containers.stats(ctx, req),
    ListContainerStats: (ctx, req) => p.containers.listStats(ctx, req),
    ExecSync: (ctx, req) => p.streaming.execSync(ctx, req),
    Exec: (ctx, req) => p.streaming.exec(ctx, req),
    Attach: (ctx, req) => p.streaming.attach(ctx, req),
    PortForward: (ctx, req) => p.streaming.portForward(ctx, req),
    // containerd 1.7's evented PLEG feed: each container's lifecycle from the moment the call is made.
    GetContainerEvents: async (ctx, _req, send) => {
      for await (const e of p.events.watch(ctx.signal)) await send(e);
    },
  });
}

export function imageHandlers(p: CriParts): ServiceHandlers<typeof IMAGE_SERVICE> {
  return serviceHandlers(IMAGE_SERVICE, {
    ListImages: (ctx, req) => p.images.list(ctx, req),
    ImageStatus: (ctx, req) => p.images.status(ctx, req),
    PullImage: (ctx, req) => p.images.pull(ctx, req),
    RemoveImage: (ctx, req) => p.images.remove(ctx, req),
    ImageFsInfo: (ctx, req) => p.images.fsInfo(ctx, req),
  });
}
