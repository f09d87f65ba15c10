/** The pods part: RunPodSandbox and friends on the sandbox service's podsandbox controller. */
import { errNotImplemented } from "#libs/errdefs";
import type { ContainersPart, CriDeps, PodsPart } from "../parts";

const notYet = (what: string) => (): Promise<never> => Promise.reject(errNotImplemented(`${what} not implemented`));

export function createPods(_deps: CriDeps, _others: { containers(): ContainersPart }): PodsPart {
  return {
    run: notYet("RunPodSandbox"),
    stop: notYet("StopPodSandbox"),
    remove: notYet("RemovePodSandbox"),
    status: notYet("PodSandboxStatus"),
    list: async () => ({ items: [] }),
    stats: notYet("PodSandboxStats"),
    listStats: async () => ({ stats: [] }),
    get: notYet("pod lookup"),
    recover: async () => {},
    close: async () => {},
  };
}
