/** The sandbox process: sandbox.v1.Store and sandbox.v1.Controller. */
import { notYetImplemented, runService } from "../../libs/service";

export const sandboxService = notYetImplemented("sandbox", [
  { type: "io.containerd.sandbox.store.v1", id: "local" },
  { type: "io.containerd.podsandbox.controller.v1", id: "podsandbox" },
  { type: "io.containerd.sandbox.controller.v1", id: "shim" },
  { type: "io.containerd.grpc.v1", id: "sandboxes" },
  { type: "io.containerd.grpc.v1", id: "sandbox-controllers" },
]);

if (require.main === module) void runService(sandboxService);
