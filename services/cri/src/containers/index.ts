/**
 * The containers part (Create/Start/Stop/Remove/List/Status/UpdateResources/ReopenLog/Stats and the
 * container IO hub).
 *
 * PLACEHOLDER (skeleton): helper B replaces this file; every RPC answers Unimplemented until then.
 */
import { errNotImplemented } from "#libs/errdefs";
import type { ContainersPart, CriDeps, ImagesPart, PodsPart } from "../parts";

const notYet = (what: string) => (): Promise<never> => Promise.reject(errNotImplemented(`${what} not implemented`));

export function createContainers(_deps: CriDeps, _others: { pods: PodsPart; images: ImagesPart }): ContainersPart {
  return {
    create: notYet("CreateContainer"),
    start: notYet("StartContainer"),
    stop: notYet("StopContainer"),
    remove: notYet("RemoveContainer"),
    status: notYet("ContainerStatus"),
    list: async () => ({ containers: [] }),
    updateResources: notYet("UpdateContainerResources"),
    reopenLog: notYet("ReopenContainerLog"),
    stats: notYet("ContainerStats"),
    listStats: async () => ({ stats: [] }),
    stopPodContainers: async () => {},
    removePodContainers: async () => {},
    io: { attach: notYet("attach") },
    recover: async () => {},
    close: async () => {},
  };
}
