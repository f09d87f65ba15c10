/** Composes the CRI's parts from one set of dependencies, in the order they need each other. */
import { dialAddress } from "#libs/config";
import type { ServiceContext } from "#libs/service";
import { criConfig } from "./config";
import { CRI_PLUGIN } from "../components";
import type { CriDeps, ContainersPart } from "./parts";
import { CriStore } from "./store";
import { createRuntimeInfo } from "./runtime";
import { createPods } from "./pods";
import { createImages } from "./images";
import { createContainers } from "./containers";
import { createStreaming } from "./streaming";
import { createCriEvents, type CriEvents } from "./events";
import type { CriParts } from "./server/handlers";

export interface CriService extends CriParts {
  deps: CriDeps;
  events: CriEvents;
  close(): Promise<void>;
}

export async function createCriService(sc: ServiceContext): Promise<CriService> {
  const store = CriStore.open(sc.root);
  const deps: CriDeps = {
    config: criConfig(sc.configOf(CRI_PLUGIN)),
    log: sc.log,
    channel: (svc) => sc.channels.get(dialAddress(sc.config, svc)),
    store,
    events: sc.events,
    root: sc.root,
    state: sc.state,
    stopping: sc.stopping,
  };
  let containers: ContainersPart | undefined;
  const pods = createPods(deps, { containers: () => containers! });
  const images = createImages(deps);
  const events = createCriEvents(sc.log);
  containers = createContainers(deps, { pods, images, events });
  const streaming = createStreaming(deps, { pods, containers, io: containers.io });
  const runtime = createRuntimeInfo(deps);
  await pods.recover();
  await containers.recover();
  await streaming.start();
  return {
    deps,
    runtime,
    pods,
    containers,
    images,
    streaming,
    events,
    async close() {
      await streaming.stop();
      await containers!.close();
      await images.close();
      await pods.close();
      await store.close();
    },
  };
}
