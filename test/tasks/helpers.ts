/**
 * Helpers for the tasks tests: a busybox rootfs directory (for `ctr run --rootfs`), `ctr events`
 * capture, and cleanup of everything containers leave behind (shims by PID, runc state, cgroups).
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before } from "node:test";
import { errorCode } from "#libs/errdefs";
import { sleep, waitFor, type Stack } from "../harness";

export const BUSYBOX = "/bin/busybox";

/** A root filesystem with busybox-static and its applets (relative symlinks), plus the usual dirs. */
export function busyboxRootfs(dir: string): string {
  fs.mkdirSync(path.join(dir, "bin"), { recursive: true });
  for (const d of ["proc", "sys", "dev", "tmp", "etc", "run", "mnt", "root", "var"]) fs.mkdirSync(path.join(dir, d), { recursive: true });
  fs.copyFileSync(BUSYBOX, path.join(dir, "bin", "busybox"));
  fs.chmodSync(path.join(dir, "bin", "busybox"), 0o755);
  const list = spawnSync(BUSYBOX, ["--list"], { encoding: "utf8" }).stdout.split("\n").filter(Boolean);
  for (const a of list) if (a !== "busybox") fs.symlinkSync("busybox", path.join(dir, "bin", a));
  fs.writeFileSync(path.join(dir, "etc", "passwd"), "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n");
  fs.writeFileSync(path.join(dir, "etc", "group"), "root:x:0:\nnogroup:x:65534:\n");
  return dir;
}

/** ctr run flags for a rootfs container (ctr's default spec has no PATH without an image). */
export const rootfsArgs = (rootfs: string): string[] => ["--env", "PATH=/bin", "--rootfs", rootfs];

function cmdline(pid: number): string {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").join(" ");
  } catch {
    return "";
  }
}

function cwdOf(pid: number): string {
  try {
    return fs.readlinkSync(`/proc/${pid}/cwd`);
  } catch {
    return "";
  }
}

/** PIDs of the shims serving this stack (ours and external ones), found by their bundle cwd or address. */
export function shimPids(stack: Stack): number[] {
  const out: number[] = [];
  for (const e of fs.readdirSync("/proc")) {
    const pid = Number(e);
    if (!pid || pid === process.pid) continue;
    const cmd = cmdline(pid);
    if (!cmd.includes("shim")) continue;
    if (cmd.includes("dist/services/shim/main.js") || cmd.includes("containerd-shim")) {
      if (cwdOf(pid).startsWith(stack.dir + "/") || cmd.includes(stack.socket)) out.push(pid);
    }
  }
  return out;
}

/** The PID of the shim serving task `id` (its working directory is the task's bundle). */
export function taskShimPid(stack: Stack, id: string): number | undefined {
  return shimPids(stack).find((p) => cwdOf(p).endsWith(`/${id}`));
}

export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    const st = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    return st.slice(st.lastIndexOf(")") + 2, st.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return false;
  }
}

/** runc containers under a runc root (all namespaces below it). */
export function runcContainers(root: string): { root: string; id: string; pid: number; status: string }[] {
  const out: { root: string; id: string; pid: number; status: string }[] = [];
  let nss: string[] = [];
  try {
    nss = fs.readdirSync(root);
  } catch {
    return out;
  }
  for (const ns of nss) {
    const r = spawnSync("runc", ["--root", path.join(root, ns), "list", "--format", "json"], { encoding: "utf8" });
    for (const c of (JSON.parse(r.stdout.trim() || "null") as { id: string; pid: number; status: string }[] | null) ?? []) out.push({ root: path.join(root, ns), ...c });
  }
  return out;
}

/** Force-delete the containers runc knows under `roots` (only those matching `ids` when given). */
export function deleteRuncContainers(roots: string[], ids?: string[]): void {
  for (const root of roots) {
    for (const c of runcContainers(root)) {
      if (ids && !ids.includes(c.id)) continue;
      spawnSync("runc", ["--root", c.root, "delete", "--force", c.id]);
    }
  }
}

/**
 * Stop the stack and remove what containers left: runc containers force-deleted while their state
 * still exists (the stack's directory goes with `stop`), then the shims killed by PID.
 */
export async function stopStackAndCleanup(stack: Stack | undefined, extraRuncRoots: { root: string; ids: string[] }[] = []): Promise<void> {
  if (!stack) return;
  const pids = shimPids(stack);
  deleteRuncContainers([path.join(stack.state, "tasks", "runc")]);
  for (const x of extraRuncRoots) deleteRuncContainers([x.root], x.ids);
  await stack.stop().catch(() => undefined);
  for (const pid of pids) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      /* gone */
    }
  }
}

export interface EventLine {
  ns: string;
  topic: string;
  json: Record<string, unknown>;
}

/** A running `ctr events` whose lines are parsed as they come. */
export class EventsWatcher {
  readonly lines: EventLine[] = [];
  private readonly child: ChildProcess;
  private buf = "";

  constructor(stack: Stack, filters: string[] = []) {
    this.child = stack.ctrSpawn(["events", ...filters]);
    this.child.stdout!.on("data", (b: Buffer) => {
      this.buf += b.toString();
      const parts = this.buf.split("\n");
      this.buf = parts.pop() ?? "";
      for (const l of parts) {
        if (!l.trim()) continue;
        const p = l.split(" ");
        this.lines.push({ ns: p[4]!, topic: p[5]!, json: JSON.parse(p.slice(6).join(" ") || "{}") as Record<string, unknown> });
      }
    });
  }

  /** Give the subscription time to be in place. */
  async ready(): Promise<void> {
    await sleep(300);
  }

  forContainer(id: string): EventLine[] {
    return this.lines.filter((l) => l.json.container_id === id || l.json.id === id || l.json.ContainerID === id);
  }

  async waitFor(what: string, pred: (l: EventLine[]) => boolean, timeoutMs = 15000): Promise<void> {
    await waitFor(what, () => (pred(this.lines) ? true : undefined), timeoutMs);
  }

  stop(): void {
    this.child.kill("SIGKILL");
  }
}

/** What `withStackAndEvents` sets up for a suite (filled in by its `before`). */
export interface SuiteStack {
  stack: Stack;
  rootfs: string;
  events: EventsWatcher;
}

/**
 * For the enclosing describe: a stack (`start` makes it; `startStack()` by default) with a busybox
 * rootfs and a `ctr events` watcher, started before its tests and cleaned up after them.
 */
export function withStackAndEvents(start: () => Promise<Stack>): SuiteStack {
  const s = {} as SuiteStack;
  before(async () => {
    s.stack = await start();
    s.rootfs = busyboxRootfs(path.join(s.stack.dir, "rootfs"));
    s.events = new EventsWatcher(s.stack);
    await s.events.ready();
  });
  after(async () => {
    s.events?.stop();
    await stopStackAndCleanup(s.stack);
  });
  return s;
}

/** Wait until a task is in `status` per `ctr task ls`. */
export async function waitTaskStatus(stack: Stack, id: string, status: string, ns = "default", timeoutMs = 15000): Promise<void> {
  await waitFor(`task ${id} ${status}`, async () => {
    const r = await stack.ctr(["t", "ls"], { namespace: ns });
    return r.stdout.split("\n").some((l) => l.split(/\s+/)[0] === id && l.split(/\s+/)[2] === status) ? true : undefined;
  }, timeoutMs, 100);
}

/** Mounts below a directory (from /proc/self/mountinfo). */
export function mountsBelow(dir: string): string[] {
  return fs.readFileSync("/proc/self/mountinfo", "utf8").split("\n").map((l) => l.split(" ")[4]).filter((m): m is string => !!m && m.startsWith(dir + "/"));
}

/** "ok" when the call succeeds, else its errdefs code (what the tests compare with containerd's). */
export async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return "ok";
  } catch (e) {
    return errorCode(e);
  }
}
