/** The `shim` controller (placeholder until the ttrpc client lands). */
import type { Logger } from "pino";
import type { Config } from "../../../../../libs/config";
import type { CallContext } from "../../../../../libs/context";
import { errNotImplemented } from "../../../../../libs/errdefs";
import type { SandboxController, ControllerInstance, ControllerStatus, SandboxExitStatus, SandboxMetric, SandboxPlatform } from "../../../../../libs/core/sandbox";
import type { SandboxDB } from "../db";

export interface ShimSandboxOptions {
  db: SandboxDB;
  root: string;
  state: string;
  config: Config;
  log: Logger;
}

const ni = (): never => {
  throw errNotImplemented("shim sandbox controller");
};

export class ShimSandboxController implements SandboxController {
  constructor(private readonly o: ShimSandboxOptions) {}
  async create(_ctx: CallContext): Promise<void> { ni(); }
  async start(_ctx: CallContext): Promise<ControllerInstance> { return ni(); }
  async platform(_ctx: CallContext): Promise<SandboxPlatform> { return ni(); }
  async stop(_ctx: CallContext): Promise<void> { ni(); }
  async wait(_ctx: CallContext): Promise<SandboxExitStatus> { return ni(); }
  async status(_ctx: CallContext): Promise<ControllerStatus> { return ni(); }
  async shutdown(_ctx: CallContext): Promise<void> { ni(); }
  async metrics(_ctx: CallContext): Promise<SandboxMetric> { return ni(); }
  async update(_ctx: CallContext): Promise<void> { ni(); }
  async recover(): Promise<void> { void this.o; }
  close(): void {}
}
