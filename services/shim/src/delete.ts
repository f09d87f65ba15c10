/**
 * `shim delete`: clean up after a shim that is gone (or a start that failed): force-delete the
 * container (or sandbox process) in the OCI runtime, unmount the rootfs, and print a protobuf DeleteResponse (pid from
 * init.pid, exit status 137 = killed) on stdout.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import type { ShimFlags } from "./flags";
import { encode } from "./pb";
import { DeleteResponse } from "./messages";
import { nowTimestamp } from "./publisher";
import { Runc } from "./runc";
import { unmountAll } from "#libs/mount";

export async function del(flags: ShimFlags): Promise<void> {
  const bundle = flags.bundle || process.cwd();
  let opts: { binary_name?: string; root?: string; runtime_args?: string[] } = {};
  try {
    opts = JSON.parse(fs.readFileSync(path.join(bundle, "options.json"), "utf8")) as typeof opts;
  } catch {
    /* never created */
  }
  const binary = opts.binary_name || process.env.FLOTILLA_RUNC_BINARY || "runc";
  const root = opts.root || path.join(process.env.FLOTILLA_RUNC_ROOT || "/run/containerd/runc", flags.namespace);
  const runc = new Runc({ binary, root, log: path.join(bundle, "log.json"), extraArgs: opts.runtime_args ?? [] });
  const r = await runc.run(["delete", "--force", flags.id]).catch((e: Error) => ({ code: 1, stdout: "", stderr: e.message }));
  if (r.code !== 0 && !/does not exist|not exist/.test(r.stderr + runc.lastError(r))) process.stderr.write(`runtime delete: ${runc.lastError(r)}\n`);
  // A task's rootfs, or a sandbox process's (under pause/).
  for (const rootfs of [path.join(bundle, "rootfs"), path.join(bundle, "pause", "rootfs")]) {
    try {
      unmountAll(rootfs);
    } catch (e) {
      process.stderr.write(`unmount ${rootfs}: ${(e as Error).message}\n`);
    }
  }
  let pid = 0;
  try {
    pid = Number(fs.readFileSync(path.join(bundle, "init.pid"), "utf8").trim()) || 0;
  } catch {
    /* no pid */
  }
  process.stdout.write(encode(DeleteResponse, { pid, exit_status: 137, exited_at: nowTimestamp() }), () => process.exit(0));
}
