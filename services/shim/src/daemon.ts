/**
 * The serving shim: a child subreaper that owns its containers' processes, serves the task API
 * (containerd.task.v2.Task and .v3) and the sandbox API (containerd.runtime.sandbox.v1.Sandbox) over
 * ttrpc on the socket `start` created (inherited as fd 3), and forwards task events to
 * `$TTRPC_ADDRESS`. It runs in its own session, so it outlives the tasks process; it exits when
 * Shutdown (or ShutdownSandbox) finds neither containers nor sandboxes left.
 */
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { setChildSubreaper } from "#libs/sys/linux";
import { classError } from "#libs/ttrpc/errors";
import { TtrpcServer } from "#libs/ttrpc/server";
import type { ShimFlags } from "./flags";
import { openLog } from "./log";
import { Publisher } from "./publisher";
import { Reaper } from "./reaper";
import { SANDBOX_SERVICE, SandboxService } from "./sandbox";
import { TaskService } from "./service";

export const TASK_V2 = "containerd.task.v2.Task";
export const TASK_V3 = "containerd.task.v3.Task";
/** Flotilla's own: a pool shim's way back to the warm pool (Release, empty request and response). */
export const POOL_SERVICE = "flotilla.shim.v1.Pool";
/** Tasks one pool shim serves before it is retired (bounds what a long-lived process accumulates). */
const MAX_USES = 200;

function parseArgs(v: string | undefined): string[] {
  if (!v) return [];
  try {
    const a = JSON.parse(v) as unknown;
    return Array.isArray(a) ? a.map(String) : [];
  } catch {
    return [];
  }
}

export async function serve(flags: ShimFlags): Promise<void> {
  const bundle = process.cwd();
  const base = { shim: "flotilla", id: flags.id, namespace: flags.namespace, pid: process.pid };
  const log = openLog(flags.warm ? undefined : path.join(bundle, "log"), flags.debug ? "debug" : "info", base);
  process.on("uncaughtException", (err) => log.error("uncaught exception", { err: err.stack ?? String(err) }));
  process.on("unhandledRejection", (err) => log.error("unhandled rejection", { err: (err as Error)?.stack ?? String(err) }));
  process.on("SIGPIPE", () => undefined);
  setChildSubreaper();
  // Spans only when the tasks process passed an OTLP endpoint down (nothing of OpenTelemetry loads otherwise).
  const spans = process.env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT ? await import("./tracing") : undefined;
  spans?.startTracing();

  const reaper = new Reaper();
  const publisher = new Publisher(process.env.TTRPC_ADDRESS ?? "", flags.namespace, log);
  const socketFile = process.env.FLOTILLA_SHIM_SOCKET ?? flags.socket;
  let stopping = false;
  const exit = (why: string): void => {
    if (stopping) return;
    stopping = true;
    log.info("shutting down", { why });
    void (async () => {
      await publisher.flush(5000);
      await server.close();
      if (socketFile) fs.rmSync(socketFile, { force: true });
      publisher.close();
      await spans?.shutdownTracing();
      process.exit(0);
    })();
  };
  const service = new TaskService({
    namespace: flags.namespace,
    publisher,
    reaper,
    log,
    runtimeBinary: process.env.FLOTILLA_RUNC_BINARY || "runc",
    runtimeRoot: process.env.FLOTILLA_RUNC_ROOT || "/run/containerd/runc",
    runtimeArgs: parseArgs(process.env.FLOTILLA_RUNC_ARGS),
    onShutdown: () => {
      if (sandboxes.sandboxes.size === 0) exit("shutdown");
    },
    onAdopt: (ns) => {
      // Warm shims start at a low priority; containers get the normal one.
      try {
        os.setPriority(0);
      } catch {
        /* not permitted */
      }
      try {
        // The session's autogroup too (the warm pool lowers both): containers run at the normal share.
        fs.writeFileSync("/proc/self/autogroup", "0");
      } catch {
        /* no autogroup scheduling */
      }
      publisher.namespace = ns;
      log.info("adopted", { namespace: ns });
    },
    onBundle: (dir, id) => {
      log.retarget(path.join(dir, "log"), { id, namespace: service.namespace });
      try {
        process.chdir(dir);
      } catch {
        /* keep the old cwd */
      }
    },
  });
  const sandboxes = new SandboxService({
    namespace: () => service.namespace,
    reaper,
    log,
    runtimeBinary: process.env.FLOTILLA_RUNC_BINARY || "runc",
    runtimeRoot: process.env.FLOTILLA_RUNC_ROOT || "/run/containerd/runc",
    runtimeArgs: parseArgs(process.env.FLOTILLA_RUNC_ARGS),
    containers: () => service.containers.values(),
    onShutdown: () => {
      if (sandboxes.sandboxes.size === 0 && service.containers.size === 0) exit("sandbox shut down");
    },
  });
  const server = new TtrpcServer({
    wrap: spans?.wrap,
    onError: (err, where) => log.error("request failed", { where, err: (err as Error)?.stack ?? String(err) }),
    // A warm shim nobody adopted is not needed once its manager hung up.
    onDisconnect: (open) => {
      if (open === 0 && !service.namespace) exit("warm shim released");
    },
  });
  const desc = service.descriptor();
  server.register(TASK_V2, desc);
  server.register(TASK_V3, desc);
  server.register(SANDBOX_SERVICE, sandboxes.descriptor());
  if (flags.warm) {
    // A pool shim whose last task is gone goes back to the tasks process's warm pool instead of
    // exiting: same state as a fresh warm shim (no namespace, no bundle), minus the start-up cost.
    let uses = 0;
    server.register(POOL_SERVICE, {
      methods: {
        Release: async () => {
          if (service.containers.size || sandboxes.sandboxes.size) throw classError("failed precondition", "the shim still serves containers");
          if (++uses >= MAX_USES) throw classError("resource exhausted", `served ${uses} tasks; a fresh shim should take over`);
          service.namespace = "";
          publisher.namespace = "";
          log.info("released to the warm pool", { uses });
          log.retarget(undefined, { id: "", namespace: "" });
          try {
            process.chdir(socketFile ? path.dirname(socketFile) : "/");
          } catch {
            /* keep the old cwd */
          }
          return Buffer.alloc(0);
        },
      },
    });
  }

  // Safety net: a shim with no containers and nobody connected for a minute is a leak.
  let idle = 0;
  setInterval(() => {
    idle = service.containers.size === 0 && sandboxes.sandboxes.size === 0 && server.connections === 0 ? idle + 1 : 0;
    if (idle >= 60) exit("idle");
  }, 1000).unref();

  const fd = Number(process.env.FLOTILLA_SHIM_LISTEN_FD ?? "");
  if (Number.isInteger(fd) && fd > 2) {
    const l = net.createServer();
    await new Promise<void>((resolve, reject) => {
      l.once("error", reject);
      l.listen({ fd }, () => resolve());
    });
    server.serve(l);
  } else if (socketFile) {
    await server.listen(socketFile);
  } else {
    throw new Error("no socket to serve on (FLOTILLA_SHIM_LISTEN_FD or -socket)");
  }
  log.info("serving", { socket: socketFile, warm: flags.warm });
}
