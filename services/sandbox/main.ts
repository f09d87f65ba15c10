/**
 * The sandbox process: containerd.services.sandbox.v1.Store (records in LMDB) and
 * containerd.services.sandbox.v1.Controller with the `podsandbox` controller (CNI network + a pause
 * container through the tasks process) and the `shim` controller (a shim's sandbox ttrpc API).
 *
 * Config (`[plugins."io.containerd.podsandbox.controller.v1.podsandbox"]`):
 *   cni_conf_dir = "/etc/cni/net.d"     # network configs (*.conf, *.conflist, *.json; first one wins);
 *                                       # when it holds none: <root>/cni/net.d, with a default bridge network
 *   cni_bin_dir  = ["/opt/cni/bin", "/usr/lib/cni"]   # plugin executables (a string or a list)
 *   cni_network  = ""                   # use the network of this name instead of the first
 *
 * Config (`[plugins."io.containerd.sandbox.controller.v1.shim"]`):
 *   shim_dirs = ["<repo>/bin"]          # searched for containerd-shim-<name>-<version> before $PATH
 *   ttrpc_address = ""                  # where shims publish events (default: <grpc address>.ttrpc)
 */
import * as path from "node:path";
import { dialAddress, unixPath } from "#libs/config";
import { repoRoot } from "#libs/proto";
import { DEFAULT_CNI_BIN_DIRS, SYSTEM_CNI_CONF_DIR } from "#libs/cni";
import { runService, uriOf, type ComponentStatus, type ServiceDefinition } from "#libs/service";
import { PODSANDBOX, SANDBOX_COMPONENTS, SANDBOX_STORE, SHIM_CONTROLLER } from "./components";
import { NamespaceEnsurer, NamespaceStoreProxy } from "#libs/clients/namespaces";
import { openSandboxDB } from "./src/local/db";
import { LocalSandboxStore } from "./src/local/store";
import { ControllerRegistry } from "./src/local/controllers";
import { PodSandboxController, podSandboxDirs } from "./src/local/podsandbox/controller";
import { PodNetworks } from "./src/local/podsandbox/network";
import { PodTasksGrpc } from "./src/local/podsandbox/tasks";
import { ShimSandboxController } from "./src/local/shim/controller";
import { SANDBOX_STORE_SERVICE, storeHandlers } from "./src/server/store";
import { SANDBOX_CONTROLLER_SERVICE, controllerHandlers } from "./src/server/controller";


export const sandboxService: ServiceDefinition = {
  name: "sandbox",
  components: SANDBOX_COMPONENTS,
  async start(sc) {
    const db = openSandboxDB(sc.root);
    const namespaces = new NamespaceEnsurer(new NamespaceStoreProxy(sc.channels.get(dialAddress(sc.config, "images"))), sc.events);
    const store = new LocalSandboxStore({ db, ensureNamespace: (ctx, ns) => namespaces.ensure(ctx, ns) });

    const podCfg = sc.configOf(PODSANDBOX);
    const { pauseDir, netnsDir } = podSandboxDirs(sc.root, sc.state);
    const confDir = podCfg.cni_conf_dir ?? SYSTEM_CNI_CONF_DIR;
    const binDirs = podCfg.cni_bin_dir ?? DEFAULT_CNI_BIN_DIRS;
    const networks = new PodNetworks({
      confDir,
      binDirs,
      defaultRoot: sc.config.root,
      netnsDir,
      ...(podCfg.cni_network ? { networkName: podCfg.cni_network } : {}),
      log: sc.log,
    });
    const pods = new PodSandboxController({ db, tasks: new PodTasksGrpc(dialAddress(sc.config, "tasks"), dialAddress(sc.config, "snapshots"), sc.channels), networks, pauseDir, netnsDir, log: sc.log });
    await pods.recover();

    const shimCfg = sc.configOf(SHIM_CONTROLLER);
    const grpcAddress = unixPath(sc.config.grpc.address) ?? sc.config.grpc.address;
    const shims = new ShimSandboxController({
      db,
      state: path.join(sc.state, "shim"),
      shimDirs: shimCfg.shim_dirs ?? [path.join(repoRoot(), "bin")],
      grpcAddress,
      ttrpcAddress: shimCfg.ttrpc_address || `${grpcAddress}.ttrpc`,
      log: sc.log,
      debug: sc.config.debug.level === "debug" || sc.config.debug.level === "trace",
      // Flotilla's shim (io.containerd.flotilla.v2) keeps its runc state and sockets under ours.
      shimEnv: { FLOTILLA_RUNC_ROOT: path.join(sc.state, "runc"), FLOTILLA_SHIM_SOCKET_DIR: path.join(sc.state, "s") },
    });
    await shims.recover();

    const controllers = new ControllerRegistry({ podsandbox: pods, shim: shims }, sc.outbox);
    sc.server.addService(SANDBOX_STORE_SERVICE, storeHandlers(store));
    sc.server.addService(SANDBOX_CONTROLLER_SERVICE, controllerHandlers(controllers));
    const status: Record<string, ComponentStatus> = {
      [uriOf(SANDBOX_STORE)]: { exports: { path: path.join(sc.root, "meta.lmdb") } },
      [uriOf(PODSANDBOX)]: { exports: { cni_conf_dir: confDir, cni_bin_dir: binDirs.join(":"), netns_dir: netnsDir } },
    };
    return {
      grpcServices: [SANDBOX_STORE_SERVICE, SANDBOX_CONTROLLER_SERVICE],
      status,
      close: async () => {
        namespaces.close();
        pods.close();
        shims.close();
        await db.close();
      },
    };
  },
};

if (require.main?.filename === __filename) void runService(sandboxService);
