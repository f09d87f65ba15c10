/**
 * The CRI process: Kubernetes' Container Runtime Interface (runtime.v1 RuntimeService and
 * ImageService), served behind the gateway on the containerd socket. Built, as containerd 2.x builds
 * it, on the other processes through their gRPC clients: pods on the sandbox service's podsandbox
 * controller, containers and tasks on the tasks process, images through transfer and images. Its own
 * state (pods, containers) is in `<root>/cri/meta.lmdb`; everything it makes lives in the `k8s.io`
 * namespace. Config: `[plugins."io.containerd.grpc.v1.cri"]`, in containerd's shape.
 */
import * as path from "node:path";
import { runService, uriOf, type ServiceDefinition } from "#libs/service";
import { CRI_COMPONENTS, CRI_PLUGIN } from "./components";
import { IMAGE_SERVICE, RUNTIME_SERVICE } from "./src/parts";
import { createCriService } from "./src/service";
import { imageHandlers, runtimeHandlers } from "./src/server/handlers";

export const criService: ServiceDefinition = {
  name: "cri",
  components: CRI_COMPONENTS,
  async start(sc) {
    const cri = await createCriService(sc);
    sc.server.addService(RUNTIME_SERVICE, runtimeHandlers(cri));
    sc.server.addService(IMAGE_SERVICE, imageHandlers(cri));
    return {
      grpcServices: [RUNTIME_SERVICE, IMAGE_SERVICE],
      status: { [uriOf(CRI_PLUGIN)]: { exports: { path: path.join(sc.root, "meta.lmdb") } } },
      close: () => cri.close(),
    };
  },
};

if (require.main?.filename === __filename) void runService(criService);
