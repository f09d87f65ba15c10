/**
 * The containers of a pod sandbox, seen through the tasks process: those whose `sandbox` field names
 * it (the pause container, whose id is the sandbox's, excepted). Stopping the sandbox stops them;
 * shutting it down removes them with their tasks and snapshots.
 */
import type { Logger } from "pino";
import type { CallContext } from "#libs/context";
import { isNotFound } from "#libs/errdefs";
import type { SandboxExitStatus } from "#libs/core/sandbox";
import { TaskStatus } from "#libs/core/tasks";
import type { PodTasks } from "./tasks";
import { now as nowDate } from "#libs/time";

export const SIGKILL = 9;
export const SIGTERM = 15;
/** Exit status reported for a task that vanished without one (containerd's convention for a lost task). */
export const LOST_EXIT = 255;

const ignoreNotFound = (e: unknown): void => {
  if (!isNotFound(e)) throw e;
};

/** Resolve with the task's exit if it comes within `ms`, else undefined. A task that is gone counts as exited. */
export async function exitWithin(tasks: PodTasks, ctx: CallContext, id: string, ms: number): Promise<SandboxExitStatus | undefined> {
  const ac = new AbortController();
  const t = setTimeout(() => ac.abort(), ms);
  try {
    return await tasks.waitTask({ ...ctx, signal: ac.signal, deadline: new Date(Date.now() + ms) }, id);
  } catch (e) {
    if (isNotFound(e)) return { exitStatus: LOST_EXIT, exitedAt: nowDate() };
    return undefined;
  } finally {
    clearTimeout(t);
  }
}

/** SIGTERM each running member, give it `graceMs`, then SIGKILL and wait up to `killWaitMs`. */
export async function stopMembers(tasks: PodTasks, ctx: CallContext, sandboxId: string, graceMs: number, killWaitMs: number): Promise<void> {
  const members = (await tasks.listContainers(ctx)).filter((c) => c.sandbox === sandboxId && c.id !== sandboxId);
  await Promise.all(members.map(async (c) => {
    let st;
    try {
      st = await tasks.getTask(ctx, c.id);
    } catch (e) {
      if (isNotFound(e)) return;
      throw e;
    }
    if (st.status === TaskStatus.Stopped) return;
    if (graceMs > 0) {
      await tasks.killTask(ctx, c.id, SIGTERM, true).catch(() => undefined);
      if (await exitWithin(tasks, ctx, c.id, graceMs)) return;
    }
    await tasks.killTask(ctx, c.id, SIGKILL, true).catch(ignoreNotFound);
    await exitWithin(tasks, ctx, c.id, killWaitMs);
  }));
}

/** Delete each member's task, container and snapshot (absent parts are fine). */
export async function removeMembers(tasks: PodTasks, ctx: CallContext, sandboxId: string, log: Logger): Promise<void> {
  for (const c of (await tasks.listContainers(ctx)).filter((x) => x.sandbox === sandboxId && x.id !== sandboxId)) {
    await tasks.deleteTask(ctx, c.id).catch(ignoreNotFound);
    await tasks.deleteContainer(ctx, c.id).catch(ignoreNotFound);
    if (c.snapshotter && c.snapshotKey) {
      await tasks.removeSnapshot(ctx, c.snapshotter, c.snapshotKey).catch((err: unknown) => {
        if (!isNotFound(err)) log.warn({ err, container: c.id }, "removing a sandbox container's snapshot");
      });
    }
  }
}

/** Kill and delete the pause task and container, absent being fine. */
export async function removePause(tasks: PodTasks, ctx: CallContext, sandboxId: string): Promise<void> {
  await tasks.killTask(ctx, sandboxId, SIGKILL).catch(() => undefined);
  await tasks.deleteTask(ctx, sandboxId).catch(ignoreNotFound);
  await tasks.deleteContainer(ctx, sandboxId).catch(ignoreNotFound);
}
