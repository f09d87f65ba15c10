/**
 * The OCI runtime spec of an application container that joins a pod sandbox: the pod's network
 * namespace (by path), the pause process's IPC and UTS namespaces, its own PID and mount namespaces,
 * and the sandbox id annotations so one shim serves the pod (runtime v2 grouping).
 */
import { errInvalidArgument } from "../errdefs";
import { SANDBOX_LABELS } from "../core/sandbox";
import { containerSpec } from "./oci-defaults";

export interface SandboxMemberSpecOptions {
  namespace: string;
  id: string;
  sandboxId: string;
  /** The pause process's pid (host view). */
  pausePid: number;
  /** The pod's network namespace path; "" = the host network (host mode pods). */
  netns: string;
  args: string[];
  env: string[];
  cwd: string;
  /** `uid[:gid]` (numeric) or "" / "root". */
  user: string;
  terminal?: boolean;
  readonlyRootfs?: boolean;
}

const DEFAULT_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const CAPS = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"];

export function parseUser(user: string): { uid: number; gid: number } {
  if (!user || user === "root") return { uid: 0, gid: 0 };
  const m = /^(\d+)(?::(\d+))?$/.exec(user);
  if (!m) throw errInvalidArgument(`user ${JSON.stringify(user)}: only numeric uid[:gid] is supported`);
  return { uid: Number(m[1]), gid: Number(m[2] ?? m[1]) };
}

export function sandboxMemberSpec(o: SandboxMemberSpecOptions): Record<string, unknown> {
  if (o.args.length === 0) throw errInvalidArgument("no command: the image has none and none was given");
  const ns = (t: string): string => `/proc/${o.pausePid}/ns/${t}`;
  const namespaces: Record<string, unknown>[] = [{ type: "pid" }, { type: "mount" }, { type: "ipc", path: ns("ipc") }];
  if (o.netns) namespaces.push({ type: "uts", path: ns("uts") }, { type: "network", path: o.netns });
  const env = o.env.some((e) => e.startsWith("PATH=")) ? o.env : [DEFAULT_ENV, ...o.env];
  return containerSpec({
    args: o.args,
    env,
    cwd: o.cwd,
    user: parseUser(o.user),
    terminal: !!o.terminal,
    capabilities: CAPS,
    readonlyRootfs: !!o.readonlyRootfs,
    annotations: {
      [SANDBOX_LABELS.criContainerType]: "container",
      [SANDBOX_LABELS.criSandboxId]: o.sandboxId,
      [SANDBOX_LABELS.runcGroup]: o.sandboxId,
    },
    cgroupsPath: `/${o.namespace}/${o.id}`,
    namespaces,
  });
}
