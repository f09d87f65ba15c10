/** Small filesystem helpers shared by the snapshotters and the differ. */
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import type { SnapshotUsage } from "../../../../libs/core/snapshots";

/**
 * Disk usage of a tree as containerd's fs.DiskUsage counts it: every inode once (hard links count
 * once), size = allocated blocks * 512, the root included. A missing root is zero.
 */
export function diskUsage(root: string): SnapshotUsage {
  const seen = new Set<string>();
  let size = 0;
  const visit = (p: string): void => {
    let st: fs.Stats;
    try {
      st = fs.lstatSync(p);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return;
      throw e;
    }
    const k = `${st.dev}:${st.ino}`;
    if (!seen.has(k)) {
      seen.add(k);
      size += st.blocks * 512;
    }
    if (st.isDirectory()) {
      for (const name of fs.readdirSync(p)) visit(path.join(p, name));
    }
  };
  visit(root);
  return { size, inodes: seen.size };
}

/** Run a command; reject with its stderr when it fails. */
export function run(cmd: string, args: string[], opts: { cwd?: string } = {}): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: opts.cwd, stdio: ["ignore", "ignore", "pipe"] });
    let err = "";
    child.stderr.on("data", (d: Buffer) => {
      if (err.length < 4096) err += d.toString();
    });
    child.on("error", reject);
    child.on("close", (code, signal) => {
      if (code === 0) resolve();
      else reject(new Error(`${cmd} ${args.join(" ")}: ${signal ?? `exit ${code}`}: ${err.trim()}`));
    });
  });
}

/**
 * Copy the contents of `src` into the existing directory `dst`, keeping owners, modes, times,
 * xattrs, hard links, symlinks and device nodes (coreutils `cp -a`, reflinks where the filesystem can).
 */
export async function copyTree(src: string, dst: string): Promise<void> {
  await run("cp", ["-a", "--reflink=auto", "--", `${src}/.`, dst]);
}

/** Remove a tree, ignoring a missing one. */
export async function removeTree(p: string): Promise<void> {
  await fs.promises.rm(p, { recursive: true, force: true, maxRetries: 3 });
}
