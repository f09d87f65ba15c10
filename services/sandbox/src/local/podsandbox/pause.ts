/**
 * The pause container: a tiny read-only rootfs holding only a static busybox (no image to pull), and
 * the OCI runtime spec of its one long-lived process, which holds the pod's namespaces: it joins the
 * pod's network namespace by path and gets new IPC, UTS, PID and mount namespaces.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { errFailedPrecondition, errInvalidArgument } from "#libs/errdefs";
import type { Mount } from "#libs/core/snapshots";
import { SANDBOX_LABELS } from "#libs/core/sandbox";
import { BUSYBOX_CANDIDATES, findBusybox, SANDBOX_SLEEP_ARGS, sandboxProcessSpec, writeBusyboxRootfs } from "#libs/sandboxrun/oci-defaults";

/**
 * Build (once) the shared pause rootfs under `dir`: /bin/busybox plus the mount points runc needs,
 * since the rootfs is mounted read-only. Returns the rootfs path.
 */
export function ensurePauseRootfs(dir: string, busybox?: string): string {
  const rootfs = path.join(dir, "rootfs");
  const marker = path.join(dir, "ready");
  if (fs.existsSync(marker)) return rootfs;
  const src = findBusybox(busybox);
  if (!src) throw errFailedPrecondition(`no static busybox found (looked at ${BUSYBOX_CANDIDATES.join(", ")}); install busybox-static`);
  const tmp = `${dir}.tmp-${process.pid}`;
  fs.rmSync(tmp, { recursive: true, force: true });
  const troot = path.join(tmp, "rootfs");
  writeBusyboxRootfs(troot, src);
  fs.symlinkSync("busybox", path.join(troot, "bin", "sh"));
  fs.symlinkSync("busybox", path.join(troot, "bin", "sleep"));
  fs.writeFileSync(path.join(tmp, "ready"), "");
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(path.dirname(dir), { recursive: true });
  fs.renameSync(tmp, dir);
  return rootfs;
}

/** The rootfs mount handed to Tasks.Create: a read-only recursive bind of the pause rootfs. */
export function pauseRootfsMount(rootfs: string): Mount {
  return { type: "bind", source: rootfs, options: ["rbind", "ro"] };
}

export interface PauseSpecOptions {
  namespace: string;
  sandboxId: string;
  hostname: string;
  /** Network namespace path; "" shares the host's network (and UTS) namespace. */
  netns: string;
  annotations?: Record<string, string>;
}

export function pauseSpec(o: PauseSpecOptions): Record<string, unknown> {
  return sandboxProcessSpec({
    // The pause process: SIGKILL stops it.
    args: [...SANDBOX_SLEEP_ARGS],
    path: "/bin",
    netns: o.netns,
    hostname: o.hostname,
    // The group annotation makes the pod's containers share the pause container's shim.
    annotations: { ...(o.annotations ?? {}), [SANDBOX_LABELS.runcGroup]: o.sandboxId },
    sandboxId: o.sandboxId,
    cgroupsPath: `/${o.namespace}/${o.sandboxId}`,
    ...podNamespaceOptions(o.annotations ?? {}),
  });
}

/** Host PID/IPC and sysctls, from the Controller.Create annotations. */
function podNamespaceOptions(a: Record<string, string>): { hostPid: boolean; hostIpc: boolean; sysctl?: Record<string, string> } {
  const out: { hostPid: boolean; hostIpc: boolean; sysctl?: Record<string, string> } = { hostPid: a[SANDBOX_LABELS.hostPid] === "true", hostIpc: a[SANDBOX_LABELS.hostIpc] === "true" };
  const raw = a[SANDBOX_LABELS.sysctls];
  if (raw) {
    let v: unknown;
    try {
      v = JSON.parse(raw);
    } catch (e) {
      throw errInvalidArgument(`annotation ${SANDBOX_LABELS.sysctls}: ${(e as Error).message}`);
    }
    if (!v || typeof v !== "object" || Array.isArray(v)) throw errInvalidArgument(`annotation ${SANDBOX_LABELS.sysctls}: must be a JSON object`);
    out.sysctl = Object.fromEntries(Object.entries(v).map(([k, x]) => [k, String(x)]));
  }
  return out;
}

/** A valid hostname for a sandbox: the spec's, else the id cut to 63 characters. */
export function sandboxHostname(id: string, spec?: { typeUrl: string; value: Uint8Array }): string {
  if (spec && spec.value.length) {
    try {
      const h = (JSON.parse(Buffer.from(spec.value).toString("utf8")) as { hostname?: unknown }).hostname;
      if (typeof h === "string" && h) return h.slice(0, 63);
    } catch {
      /* not a JSON spec */
    }
  }
  return id.slice(0, 63);
}
