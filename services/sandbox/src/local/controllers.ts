/**
 * containerd.services.sandbox.v1.Controller's behaviour: the controllers by `sandboxer` name (empty:
 * InvalidArgument, unknown: NotFound, as containerd's controller service), each wrapped so that a
 * successful Create, Start or Wait publishes /sandboxes/create, /sandboxes/start or /sandboxes/exit.
 */
import { namespaceRequired, type CallContext } from "#libs/context";
import { errInvalidArgument, errNotFound } from "#libs/errdefs";
import type { EventPublisher } from "#libs/events";
import { toTimestamp } from "#libs/proto";
import { SANDBOX_EVENTS } from "#libs/core/sandbox";
import type { ControllerInstance, ControllerStatus, SandboxController, SandboxControllers, SandboxCreateOptions, SandboxExitStatus, SandboxInput, SandboxMetric, SandboxPlatform } from "#libs/core/sandbox";

/** A controller that publishes containerd's sandbox events after its successful calls. */
class EventingController implements SandboxController {
  constructor(private readonly inner: SandboxController, private readonly events: EventPublisher) {}

  async create(ctx: CallContext, sandbox: SandboxInput, opts?: SandboxCreateOptions): Promise<void> {
    namespaceRequired(ctx);
    await this.inner.create(ctx, sandbox, opts);
    await this.events.publish(ctx, SANDBOX_EVENTS.create.topic, SANDBOX_EVENTS.create.type, { sandbox_id: sandbox.id });
  }
  async start(ctx: CallContext, id: string): Promise<ControllerInstance> {
    namespaceRequired(ctx);
    const inst = await this.inner.start(ctx, id);
    await this.events.publish(ctx, SANDBOX_EVENTS.start.topic, SANDBOX_EVENTS.start.type, { sandbox_id: id });
    return inst;
  }
  async wait(ctx: CallContext, id: string): Promise<SandboxExitStatus> {
    namespaceRequired(ctx);
    const st = await this.inner.wait(ctx, id);
    await this.events.publish(ctx, SANDBOX_EVENTS.exit.topic, SANDBOX_EVENTS.exit.type, { sandbox_id: id, exit_status: st.exitStatus, exited_at: toTimestamp(st.exitedAt) });
    return st;
  }
  platform(ctx: CallContext, id: string): Promise<SandboxPlatform> {
    namespaceRequired(ctx);
    return this.inner.platform(ctx, id);
  }
  stop(ctx: CallContext, id: string, opts?: { timeoutSecs?: number }): Promise<void> {
    namespaceRequired(ctx);
    return this.inner.stop(ctx, id, opts);
  }
  status(ctx: CallContext, id: string, verbose?: boolean): Promise<ControllerStatus> {
    namespaceRequired(ctx);
    return this.inner.status(ctx, id, verbose);
  }
  shutdown(ctx: CallContext, id: string): Promise<void> {
    namespaceRequired(ctx);
    return this.inner.shutdown(ctx, id);
  }
  metrics(ctx: CallContext, id: string): Promise<SandboxMetric> {
    namespaceRequired(ctx);
    return this.inner.metrics(ctx, id);
  }
  update(ctx: CallContext, id: string, sandbox: SandboxInput, fields?: readonly string[]): Promise<void> {
    namespaceRequired(ctx);
    return this.inner.update(ctx, id, sandbox, fields);
  }
}

export class ControllerRegistry implements SandboxControllers {
  private readonly byName = new Map<string, SandboxController>();

  constructor(controllers: Record<string, SandboxController>, events: EventPublisher) {
    for (const [name, c] of Object.entries(controllers)) this.byName.set(name, new EventingController(c, events));
  }

  get(sandboxer: string): SandboxController {
    if (!sandboxer) throw errInvalidArgument("sandbox controller name can not be empty");
    const c = this.byName.get(sandboxer);
    if (!c) throw errNotFound(`failed to get sandbox controller by ${sandboxer}`);
    return c;
  }

  names(): string[] {
    return [...this.byName.keys()];
  }
}
