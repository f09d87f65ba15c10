/** The tasks process: containers.v1.Containers, tasks.v1.Tasks and the shims' ttrpc events socket. */
import { notYetImplemented, runService } from "../../libs/service";

export const tasksService = notYetImplemented("tasks", [
  { type: "io.containerd.runtime.v2", id: "task" },
  { type: "io.containerd.grpc.v1", id: "containers" },
  { type: "io.containerd.grpc.v1", id: "tasks" },
]);

if (require.main === module) void runService(tasksService);
