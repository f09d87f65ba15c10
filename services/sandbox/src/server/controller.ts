/** gRPC adapter for containerd.services.sandbox.v1.Controller: pick the controller by `sandboxer`, call it, convert. */
import { serviceHandlers, type Msg, type ServiceHandlers } from "#libs/grpc/server";
import { toTimestamp } from "#libs/proto";
import {
  anyFromProto,
  instanceToProto,
  metricToProto,
  sandboxFromProto,
  SANDBOX_CONTROLLER_SERVICE,
  statusToProto,
} from "#libs/clients/sandbox";
import { mountFromProto } from "#libs/mount";
import type { SandboxControllers, SandboxInput } from "#libs/core/sandbox";

export { SANDBOX_CONTROLLER_SERVICE };

export function controllerHandlers(controllers: SandboxControllers): ServiceHandlers<typeof SANDBOX_CONTROLLER_SERVICE> {
  return serviceHandlers(SANDBOX_CONTROLLER_SERVICE, {
    Create: async (ctx, req) => {
      const ctrl = controllers.get(req.sandboxer);
      const sandbox: SandboxInput = req.sandbox ? { ...sandboxFromProto(req.sandbox), id: req.sandbox_id || req.sandbox.sandbox_id } : { id: req.sandbox_id, runtime: { name: "" } };
      const options = anyFromProto(req.options);
      await ctrl.create(ctx, sandbox, {
        rootfs: ((req.rootfs as Msg[] | undefined) ?? []).map(mountFromProto),
        ...(options ? { options } : {}),
        netnsPath: req.netns_path ?? "",
        annotations: req.annotations ?? {},
      });
      return { sandbox_id: sandbox.id };
    },
    Start: async (ctx, req) => instanceToProto(await controllers.get(req.sandboxer).start(ctx, req.sandbox_id)),
    Platform: async (ctx, req) => {
      const p = await controllers.get(req.sandboxer).platform(ctx, req.sandbox_id);
      return { platform: { os: p.os, architecture: p.architecture, variant: p.variant } };
    },
    Stop: async (ctx, req) => {
      await controllers.get(req.sandboxer).stop(ctx, req.sandbox_id, { timeoutSecs: req.timeout_secs ?? 0 });
      return {};
    },
    Wait: async (ctx, req) => {
      const st = await controllers.get(req.sandboxer).wait(ctx, req.sandbox_id);
      return { exit_status: st.exitStatus, exited_at: toTimestamp(st.exitedAt) };
    },
    Status: async (ctx, req) => statusToProto(await controllers.get(req.sandboxer).status(ctx, req.sandbox_id, !!req.verbose)),
    Shutdown: async (ctx, req) => {
      await controllers.get(req.sandboxer).shutdown(ctx, req.sandbox_id);
      return {};
    },
    Metrics: async (ctx, req) => ({ metrics: metricToProto(await controllers.get(req.sandboxer).metrics(ctx, req.sandbox_id)) }),
    Update: async (ctx, req) => {
      const sandbox: SandboxInput = req.sandbox ? sandboxFromProto(req.sandbox) : { id: req.sandbox_id, runtime: { name: "" } };
      await controllers.get(req.sandboxer).update(ctx, req.sandbox_id, { ...sandbox, id: req.sandbox_id }, req.fields ?? []);
      return {};
    },
  });
}
