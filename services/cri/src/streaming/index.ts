/**
 * The streaming part: the streaming server (exec, attach, port-forward over SPDY and websocket) and
 * the ExecSync, Exec, Attach and PortForward RPCs.
 *
 * PLACEHOLDER (skeleton): helper C replaces this file; every RPC answers Unimplemented until then.
 */
import { errNotImplemented } from "#libs/errdefs";
import type { ContainersPart, ContainerIOHub, CriDeps, PodsPart, StreamingPart } from "../parts";

const notYet = (what: string) => (): Promise<never> => Promise.reject(errNotImplemented(`${what} not implemented`));

export function createStreaming(_deps: CriDeps, _others: { pods: PodsPart; containers: ContainersPart; io: ContainerIOHub }): StreamingPart {
  return {
    start: async () => {},
    stop: async () => {},
    execSync: notYet("ExecSync"),
    exec: notYet("Exec"),
    attach: notYet("Attach"),
    portForward: notYet("PortForward"),
  };
}
