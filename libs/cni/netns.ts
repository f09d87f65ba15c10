/**
 * Persistent network namespaces: `unshare --net=<file>` makes a new namespace and bind-mounts it on
 * `<file>` in the host mount namespace (as `ip netns add` does under /run/netns, but anywhere, e.g.
 * under a service's state directory). Removing it unmounts the file; the kernel frees the namespace and
 * its interfaces (the pod end of a veth pair takes its peer with it) once no process is left in it.
 */
import { execFile } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { promisify } from "node:util";
import { errFailedPrecondition } from "../errdefs";

const run = promisify(execFile);

/** The mount points under `dir` (or equal to it), from /proc/self/mountinfo. */
export function mountsBelow(dir: string): string[] {
  const out: string[] = [];
  for (const line of fs.readFileSync("/proc/self/mountinfo", "utf8").split("\n")) {
    const mp = line.split(" ")[4];
    if (!mp) continue;
    const p = mp.replace(/\\(\d{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
    if (p === dir || p.startsWith(dir + "/")) out.push(p);
  }
  return out;
}

export function isMounted(p: string): boolean {
  return mountsBelow(p).includes(p);
}

/** Create a network namespace pinned at `file` (its directory is created). FailedPrecondition on failure, with nothing left behind. */
export async function createNetns(file: string): Promise<void> {
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o711 });
  fs.writeFileSync(file, "", { mode: 0o444, flag: "wx" });
  try {
    await run("unshare", [`--net=${file}`, "true"], { timeout: 30000 });
  } catch (e) {
    await removeNetns(file).catch(() => undefined);
    throw errFailedPrecondition(`create network namespace ${file}: ${(e as { stderr?: string }).stderr?.trim() || (e as Error).message}`);
  }
}

/** Unmount and remove a pinned namespace; absent is fine. */
export async function removeNetns(file: string): Promise<void> {
  for (let i = 0; i < 4 && isMounted(file); i++) {
    try {
      await run("umount", [i < 3 ? file : "-l", ...(i < 3 ? [] : [file])], { timeout: 30000 });
    } catch {
      /* retry, then lazily */
    }
  }
  if (isMounted(file)) throw errFailedPrecondition(`network namespace ${file} is still mounted`);
  try {
    fs.unlinkSync(file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
  }
}

/** The pinned namespace files in `dir` (mounted or not). */
export function listNetns(dir: string): string[] {
  try {
    return fs.readdirSync(dir).map((n) => path.join(dir, n));
  } catch {
    return [];
  }
}
