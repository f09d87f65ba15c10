/** The transfer process: transfer.v1.Transfer and streaming.v1.Streaming. */
import { notYetImplemented, runService } from "../../libs/service";

export const transferService = notYetImplemented("transfer", [
  { type: "io.containerd.transfer.v1", id: "local" },
  { type: "io.containerd.grpc.v1", id: "transfer" },
  { type: "io.containerd.grpc.v1", id: "streaming" },
]);

if (require.main === module) void runService(transferService);
