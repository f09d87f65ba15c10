/**
 * Exit statuses of the container processes. The shim is a child subreaper, so a container's init and
 * exec'd processes (whose parent, runc, exits at once) are re-parented to it. On SIGCHLD, and on a slow
 * timer as a safety net, it calls waitpid(pid, WNOHANG) for exactly the pids it watches: never
 * waitpid(-1), which would steal the children libuv spawned (runc itself). Other zombies re-parented to
 * the shim are reaped by pid too, after checking they are not libuv's.
 */
import * as fs from "node:fs";
import { reapPid } from "#libs/sys/linux";
import { now } from "#libs/time";

export type ExitHandler = (exitStatus: number, exitedAt: Date) => void;

export class Reaper {
  private readonly watched = new Map<number, ExitHandler>();
  /** Exits of pids nobody watched yet (a process can exit before its pid file is read). */
  private readonly early = new Map<number, { status: number; at: Date }>();
  /** Children spawned through child_process (libuv reaps those itself). */
  readonly spawned = new Set<number>();
  private readonly timer: NodeJS.Timeout;

  constructor() {
    process.on("SIGCHLD", () => this.check());
    this.timer = setInterval(() => this.check(), 1000);
    this.timer.unref();
  }

  /** Call `onExit` once when `pid` exits (at once if it already has). */
  watch(pid: number, onExit: ExitHandler): void {
    const e = this.early.get(pid);
    if (e) {
      this.early.delete(pid);
      onExit(e.status, e.at);
      return;
    }
    this.watched.set(pid, onExit);
    const r = reapPid(pid);
    if (r) {
      this.watched.delete(pid);
      onExit(r.exitStatus, now());
    }
  }

  unwatch(pid: number): void {
    this.watched.delete(pid);
  }

  check(): void {
    for (const [pid, h] of [...this.watched]) {
      const r = reapPid(pid);
      if (!r) continue;
      this.watched.delete(pid);
      try {
        h(r.exitStatus, now());
      } catch {
        /* the handler's own problem */
      }
    }
    this.reapStrays();
  }

  /** Zombie children that are neither watched nor libuv's: reap them (remembering the status briefly). */
  private reapStrays(): void {
    let tasks: string[];
    try {
      tasks = fs.readdirSync("/proc/self/task");
    } catch {
      return;
    }
    for (const t of tasks) {
      let kids: string;
      try {
        kids = fs.readFileSync(`/proc/self/task/${t}/children`, "utf8");
      } catch {
        continue;
      }
      for (const k of kids.split(" ")) {
        const pid = Number(k);
        if (!pid || this.watched.has(pid) || this.spawned.has(pid)) continue;
        let stat: string;
        try {
          stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
        } catch {
          continue;
        }
        const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
        if (state !== "Z") continue;
        const r = reapPid(pid);
        if (r) {
          this.early.set(pid, { status: r.exitStatus, at: now() });
          if (this.early.size > 256) this.early.delete(this.early.keys().next().value!);
        }
      }
    }
  }
}
