/** containerd.services.tasks.v1.Tasks as a thin adapter over a TaskService. */
import { serviceHandlers, type Msg, type ServiceHandlers } from "#libs/grpc/server";
import { toTimestamp } from "#libs/proto";
import { errInvalidArgument } from "#libs/errdefs";
import { anyFromProto, anyToProto } from "#libs/clients/containers";
import type { ExitInfo, ProcessState, TaskService } from "#libs/core/tasks";
import { mountFromProto } from "#libs/mount";
import type { Input } from "#libs/proto/types";

export const TASKS_SERVICE = "containerd.services.tasks.v1.Tasks";

const ts = (d: Date | undefined): Input["google.protobuf.Timestamp"] | null => (d && d.getTime() > 0 ? toTimestamp(d) : null);

export function processToProto(p: ProcessState): Input["containerd.v1.types.Process"] {
  return {
    container_id: "",
    id: p.id,
    pid: p.pid,
    status: p.status,
    stdin: p.stdin,
    stdout: p.stdout,
    stderr: p.stderr,
    terminal: p.terminal,
    exit_status: p.exitStatus,
    exited_at: ts(p.exitedAt),
  };
}

const exitToProto = (e: ExitInfo, id = ""): Input["containerd.services.tasks.v1.DeleteResponse"] => ({ id, pid: e.pid, exit_status: e.exitStatus, exited_at: ts(e.exitedAt) });

export function tasksHandlers(tasks: TaskService): ServiceHandlers<typeof TASKS_SERVICE> {
  return serviceHandlers(TASKS_SERVICE, {
    Create: async (ctx, req) => {
      if (!req.container_id) throw errInvalidArgument("container id must be set");
      const options = anyFromProto(req.options);
      const pid = await tasks.create(ctx, {
        containerId: req.container_id,
        rootfs: ((req.rootfs as Msg[] | undefined) ?? []).map(mountFromProto),
        io: { stdin: req.stdin ?? "", stdout: req.stdout ?? "", stderr: req.stderr ?? "", terminal: !!req.terminal },
        ...(req.checkpoint ? { checkpoint: { mediaType: req.checkpoint.media_type, digest: req.checkpoint.digest, size: Number(req.checkpoint.size ?? 0) } } : {}),
        ...(options ? { options } : {}),
        ...(req.runtime_path ? { runtimePath: req.runtime_path } : {}),
        ...(req.task_api_address ? { taskApiAddress: req.task_api_address, taskApiVersion: Number(req.task_api_version ?? 0) } : {}),
      });
      return { container_id: req.container_id, pid };
    },
    Start: async (ctx, req) => ({ pid: await tasks.start(ctx, req.container_id, req.exec_id ?? "") }),
    Delete: async (ctx, req) => exitToProto(await tasks.delete(ctx, req.container_id)),
    DeleteProcess: async (ctx, req) => exitToProto(await tasks.deleteProcess(ctx, req.container_id, req.exec_id ?? ""), req.exec_id ?? ""),
    Get: async (ctx, req) => ({ process: processToProto(await tasks.get(ctx, req.container_id, req.exec_id ?? "")) }),
    List: async (ctx) => ({ tasks: (await tasks.list(ctx)).map(processToProto) }),
    Kill: async (ctx, req) => {
      await tasks.kill(ctx, req.container_id, Number(req.signal ?? 0), { execId: req.exec_id ?? "", all: !!req.all });
      return {};
    },
    Exec: async (ctx, req) => {
      const spec = anyFromProto(req.spec);
      if (!spec) throw errInvalidArgument("exec spec must be set");
      await tasks.exec(ctx, req.container_id, req.exec_id ?? "", { stdin: req.stdin ?? "", stdout: req.stdout ?? "", stderr: req.stderr ?? "", terminal: !!req.terminal }, spec);
      return {};
    },
    ResizePty: async (ctx, req) => {
      await tasks.resizePty(ctx, req.container_id, req.exec_id ?? "", Number(req.width ?? 0), Number(req.height ?? 0));
      return {};
    },
    CloseIO: async (ctx, req) => {
      await tasks.closeIO(ctx, req.container_id, req.exec_id ?? "", !!req.stdin);
      return {};
    },
    Pause: async (ctx, req) => {
      await tasks.pause(ctx, req.container_id);
      return {};
    },
    Resume: async (ctx, req) => {
      await tasks.resume(ctx, req.container_id);
      return {};
    },
    ListPids: async (ctx, req) => ({
      processes: (await tasks.listPids(ctx, req.container_id)).map((p) => ({ pid: p.pid, info: anyToProto(p.info) })),
    }),
    Checkpoint: async (ctx, req) => {
      const options = anyFromProto(req.options);
      const ds = await tasks.checkpoint(ctx, req.container_id, { parentCheckpoint: req.parent_checkpoint ?? "", ...(options ? { options } : {}) });
      return { descriptors: ds.map((d) => ({ media_type: d.mediaType, digest: d.digest, size: d.size, annotations: d.annotations ?? {} })) };
    },
    Update: async (ctx, req) => {
      await tasks.update(ctx, req.container_id, anyFromProto(req.resources), req.annotations ?? {});
      return {};
    },
    Metrics: async (ctx, req) => ({
      metrics: (await tasks.metrics(ctx, req.filters ?? [])).map((m) => ({ timestamp: toTimestamp(m.timestamp), id: m.id, data: anyToProto(m.data) })),
    }),
    Wait: async (ctx, req) => {
      const e = await tasks.wait(ctx, req.container_id, req.exec_id ?? "");
      return { exit_status: e.exitStatus, exited_at: ts(e.exitedAt) };
    },
  });
}
