/**
 * The shim-level sandbox API (containerd.runtime.sandbox.v1.Sandbox), served next to the task API so
 * the sandbox service's `shim` sandboxer can drive Flotilla's shim. A sandbox is one long-lived
 * process run with the OCI runtime, the way the podsandbox controller's pause container is: it joins
 * the pod's network namespace by path (or shares the host's when none is given) and gets new PID, IPC,
 * UTS and mount namespaces, which the pod's containers join through /proc/<pid>/ns/*. Its bundle is
 * `<bundle_path>/pause`: `config.json` generated here, and as rootfs either the mounts the caller
 * passed (the process is then the spec's `process.args`, else `/pause`) or a tiny read-only tree
 * holding a copy of the host's static busybox, which sleeps.
 *
 * CreateSandbox runs `runc create` (the process waits at the exec FIFO), StartSandbox `runc start`.
 * StopSandbox kills the containers this shim serves, then the sandbox process (SIGTERM first when
 * given a timeout, SIGKILL after it). ShutdownSandbox deletes the sandbox process and its bundle; the
 * shim exits once it serves neither sandboxes nor containers.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { mountFromProto } from "#libs/mount";
import { classError } from "#libs/ttrpc/errors";
import type { ServiceDesc, UnaryHandler } from "#libs/ttrpc/server";
import { cgroupOf, isLegacy, statsV1, statsV2 } from "./cgroups";
import { Container } from "./container";
import type { ShimLogger } from "./log";
import * as M from "./messages";
import { decode, encode, type Obj, type Schema } from "./pb";
import type { MethodName, ServerRequest, ServerResponse } from "#libs/proto/types";
import { nowTimestamp } from "./publisher";
import { now } from "#libs/time";
import type { Reaper } from "./reaper";
import { Runc } from "./runc";
import { BUSYBOX_CANDIDATES, findBusybox, SANDBOX_SLEEP_ARGS, sandboxProcessSpec, writeBusyboxRootfs } from "#libs/sandboxrun/oci-defaults";

export const SANDBOX_SERVICE = "containerd.runtime.sandbox.v1.Sandbox";
export const OCI_SPEC_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/Spec";

export interface SandboxServiceOptions {
  /** The shim's namespace (fixed by its command line). */
  namespace: () => string;
  reaper: Reaper;
  log: ShimLogger;
  runtimeBinary: string;
  runtimeRoot: string;
  runtimeArgs?: string[];
  /** The containers this shim serves (StopSandbox stops them first). */
  containers: () => Iterable<Container>;
  /** A sandbox was shut down; the daemon exits when nothing is left. */
  onShutdown: () => void;
}

interface PodSandbox {
  id: string;
  bundle: string;
  netns: string;
  container: Container;
  spec: Record<string, unknown>;
  createdAt: Date;
}

/** Go's GOARCH for Node's process.arch. */
export function goArch(arch: string = process.arch): string {
  return ({ x64: "amd64", ia32: "386", arm64: "arm64", arm: "arm", ppc64: "ppc64le", s390x: "s390x", riscv64: "riscv64", loong64: "loong64" } as Record<string, string>)[arch] ?? arch;
}

export interface SandboxSpecInput {
  id: string;
  namespace: string;
  hostname: string;
  netns: string;
  args: string[];
  annotations: Record<string, string>;
  systemdCgroup: boolean;
}

/** The OCI spec of a sandbox process. */
export function sandboxSpec(o: SandboxSpecInput): Record<string, unknown> {
  return sandboxProcessSpec({
    args: o.args,
    path: "/bin:/usr/bin:/sbin:/usr/sbin",
    netns: o.netns,
    hostname: o.hostname,
    annotations: o.annotations,
    sandboxId: o.id,
    cgroupsPath: o.systemdCgroup ? `system.slice:flotilla-${o.namespace}:${o.id}` : `/${o.namespace}/${o.id}`,
  });
}

/** A read-only rootfs holding only a copy of the static busybox (and the mount points runc needs). */
export function buildSleepRootfs(rootfs: string, busybox?: string): void {
  const src = findBusybox(busybox);
  if (!src) throw classError("failed precondition", `no static busybox for the sandbox process (looked at ${BUSYBOX_CANDIDATES.join(", ")}); install busybox-static or pass a rootfs`);
  writeBusyboxRootfs(rootfs, src);
}

/** What the caller put in the bundle's config.json (the sandbox's spec), if it is JSON. */
function callerSpec(bundle: string): { hostname?: string; process?: { args?: string[] } } {
  try {
    return JSON.parse(fs.readFileSync(path.join(bundle, "config.json"), "utf8")) as { hostname?: string; process?: { args?: string[] } };
  } catch {
    return {};
  }
}

/** The sandbox API's messages, as the codec in ./pb decodes them and encodes them. */
type SandboxApi = typeof SANDBOX_SERVICE;
type Req<K extends MethodName<SandboxApi>> = ServerRequest<SandboxApi, K>;
type Res<K extends MethodName<SandboxApi>> = ServerResponse<SandboxApi, K>;

const ts = (d: Date | undefined): Obj | null => (d ? nowTimestamp(d) : null);

export class SandboxService {
  readonly sandboxes = new Map<string, PodSandbox>();
  /** Ids between CreateSandbox's check and its registration. */
  private readonly creating = new Set<string>();

  constructor(private readonly o: SandboxServiceOptions) {}

  private get(id: unknown): PodSandbox {
    const s = this.sandboxes.get(String(id ?? ""));
    if (!s) throw classError("not found", `sandbox ${JSON.stringify(String(id ?? ""))} not found`);
    return s;
  }

  async create(r: Req<"CreateSandbox">): Promise<Res<"CreateSandbox">> {
    const id = String(r.sandbox_id ?? "");
    const bundle = String(r.bundle_path ?? "");
    if (!id) throw classError("invalid argument", "sandbox id is required");
    if (!bundle || !path.isAbsolute(bundle)) throw classError("invalid argument", "an absolute bundle path is required");
    if (this.sandboxes.has(id) || this.creating.has(id)) throw classError("already exists", `sandbox ${JSON.stringify(id)}`);
    if (!fs.existsSync(bundle)) throw classError("not found", `bundle ${bundle} does not exist`);
    if (r.options?.type_url && !String(r.options.type_url).endsWith("containerd.runc.v1.Options")) {
      throw classError("invalid argument", `unsupported sandbox options type ${r.options.type_url}`);
    }
    const opts = decode(M.RuncOptions, r.options?.type_url ? r.options.value : Buffer.alloc(0));
    this.creating.add(id);
    const ns = this.o.namespace();
    const dir = path.join(bundle, "pause");
    try {
      const binary = opts.binary_name || this.o.runtimeBinary;
      const root = opts.root || path.join(this.o.runtimeRoot, ns);
      const runtimeArgs = opts.binary_name ? [] : this.o.runtimeArgs ?? [];
      // For `shim delete` after a crash: which runtime and state root hold the sandbox process.
      fs.writeFileSync(path.join(bundle, "options.json"), JSON.stringify({ ...opts, binary_name: binary, root, runtime_args: runtimeArgs }), { mode: 0o600 });
      fs.rmSync(dir, { recursive: true, force: true });
      fs.mkdirSync(path.join(dir, "rootfs"), { recursive: true, mode: 0o711 });
      const rootfs = (r.rootfs as Obj[] | undefined ?? []).map(mountFromProto);
      const given = callerSpec(bundle);
      if (!rootfs.length) buildSleepRootfs(path.join(dir, "rootfs"));
      const args = rootfs.length ? (given.process?.args?.length ? given.process.args : ["/pause"]) : [...SANDBOX_SLEEP_ARGS];
      const netns = String(r.netns_path ?? "");
      const spec = sandboxSpec({
        id,
        namespace: ns,
        hostname: (typeof given.hostname === "string" && given.hostname ? given.hostname : id).slice(0, 63),
        netns,
        args,
        annotations: (r.annotations as Record<string, string> | undefined) ?? {},
        systemdCgroup: !!opts.systemd_cgroup,
      });
      fs.writeFileSync(path.join(dir, "config.json"), JSON.stringify(spec), { mode: 0o600 });
      const runc = new Runc({ binary, root, log: path.join(dir, "log.json"), systemdCgroup: opts.systemd_cgroup, extraArgs: runtimeArgs }, this.o.reaper);
      const c = new Container(
        { id, bundle: dir, rootfs, stdio: { stdin: "", stdout: "", stderr: "", terminal: false }, runc, noPivot: opts.no_pivot_root, noNewKeyring: opts.no_new_keyring },
        this.o.reaper,
        { onExit: () => this.o.log.info("sandbox process exited", { sandbox: id, status: c.init.exitStatus }), onOOM: () => undefined },
      );
      const created = c.create();
      c.init.busy = created;
      const pid = await created;
      this.sandboxes.set(id, { id, bundle, netns, container: c, spec, createdAt: now() });
      this.o.log.info("sandbox created", { sandbox: id, pid, ms: c.timings });
      return {};
    } catch (e) {
      fs.rmSync(dir, { recursive: true, force: true });
      throw e;
    } finally {
      this.creating.delete(id);
    }
  }

  async start(r: Req<"StartSandbox">): Promise<Res<"StartSandbox">> {
    const s = this.get(r.sandbox_id);
    const p = s.container.init;
    const starting = s.container.start();
    p.busy = starting;
    const pid = await starting;
    this.o.log.info("sandbox started", { sandbox: s.id, pid });
    return { pid, created_at: ts(s.createdAt), spec: { type_url: OCI_SPEC_TYPE_URL, value: Buffer.from(JSON.stringify(s.spec)) } };
  }

  platform(r: Req<"Platform">): Res<"Platform"> {
    this.get(r.sandbox_id);
    return { platform: { os: "linux", architecture: goArch(), variant: process.arch === "arm64" ? "v8" : "" } };
  }

  async stop(r: Req<"StopSandbox">): Promise<Res<"StopSandbox">> {
    const s = this.get(r.sandbox_id);
    // The pod's containers go first (they are the ones that may hold on to the sandbox's namespaces).
    await Promise.all([...this.o.containers()].map(async (c) => {
      if (c.init.hasExited || c.init.status === "deleted") return;
      await c.kill("", 9, true).catch(() => undefined);
      await Promise.race([c.init.wait(), delay(10_000)]);
    }));
    const c = s.container;
    if (!c.init.hasExited) {
      const timeout = Number(r.timeout_secs ?? 0);
      if (timeout > 0 && c.init.status === "running") {
        await c.kill("", 15, false).catch(() => undefined);
        await Promise.race([c.init.wait(), delay(timeout * 1000)]);
      }
      if (!c.init.hasExited) {
        await c.kill("", 9, true).catch(() => undefined);
        await Promise.race([c.init.wait(), delay(10_000)]);
      }
      if (!c.init.hasExited) throw classError("deadline exceeded", `sandbox ${s.id} did not stop`);
    }
    return {};
  }

  async wait(r: Req<"WaitSandbox">): Promise<Res<"WaitSandbox">> {
    const s = this.get(r.sandbox_id);
    const e = await s.container.init.wait();
    return { exit_status: e.status, exited_at: ts(e.at) };
  }

  status(r: Req<"SandboxStatus">): Res<"SandboxStatus"> {
    const s = this.get(r.sandbox_id);
    const p = s.container.init;
    const info: Record<string, string> = { status: p.status };
    if (r.verbose) Object.assign(info, { bundle: s.bundle, netns: s.netns, runtime: s.container.runc.opts.binary, root: s.container.runc.opts.root });
    return {
      sandbox_id: s.id,
      pid: p.pid,
      state: p.status === "running" || p.status === "paused" || p.status === "pausing" ? "SANDBOX_READY" : "SANDBOX_NOTREADY",
      info,
      created_at: ts(s.createdAt),
      exited_at: ts(p.exitedAt),
      extra: null,
    };
  }

  ping(r: Req<"PingSandbox">): Res<"PingSandbox"> {
    this.get(r.sandbox_id);
    return {};
  }

  async shutdown(r: Req<"ShutdownSandbox">): Promise<Res<"ShutdownSandbox">> {
    const s = this.get(r.sandbox_id);
    const c = s.container;
    if (!c.init.hasExited && c.init.status !== "created") {
      await c.kill("", 9, true).catch(() => undefined);
      await Promise.race([c.init.wait(), delay(10_000)]);
    }
    if (c.init.status === "running" || c.init.status === "paused" || c.init.status === "pausing") throw classError("failed precondition", `sandbox ${s.id} is still running`);
    if (c.init.status !== "deleted") await c.deleteInit();
    fs.rmSync(path.join(s.bundle, "pause"), { recursive: true, force: true });
    this.sandboxes.delete(s.id);
    this.o.log.info("sandbox shut down", { sandbox: s.id });
    setImmediate(() => this.o.onShutdown());
    return {};
  }

  metrics(r: Req<"SandboxMetrics">): Res<"SandboxMetrics"> {
    const s = this.get(r.sandbox_id);
    const cg = s.container.cgroup ?? (s.container.init.pid && !s.container.init.hasExited ? cgroupOf(s.container.init.pid) : undefined);
    if (!cg) throw classError("not found", `sandbox ${s.id} has no cgroup`);
    const legacy = isLegacy();
    const schema = legacy ? M.MetricsV1 : M.MetricsV2;
    const data = legacy ? statsV1(cg) : statsV2(cg);
    return { metrics: { timestamp: nowTimestamp(), id: s.id, data: { type_url: schema.name, value: encode(schema, data) } } };
  }

  /** ttrpc handlers of containerd.runtime.sandbox.v1.Sandbox. */
  descriptor(): ServiceDesc {
    const h = <K extends MethodName<SandboxApi>>(req: Schema, res: Schema, fn: (r: Req<K>) => Res<K> | Promise<Res<K>>): UnaryHandler => async (_ctx, payload) => encode(res, await fn(decode(req, payload) as Req<K>));
    return {
      methods: {
        CreateSandbox: h<"CreateSandbox">(M.CreateSandboxRequest, M.CreateSandboxResponse, (r) => this.create(r)),
        StartSandbox: h<"StartSandbox">(M.StartSandboxRequest, M.StartSandboxResponse, (r) => this.start(r)),
        Platform: h<"Platform">(M.PlatformRequest, M.PlatformResponse, (r) => this.platform(r)),
        StopSandbox: h<"StopSandbox">(M.StopSandboxRequest, M.StopSandboxResponse, (r) => this.stop(r)),
        WaitSandbox: h<"WaitSandbox">(M.WaitSandboxRequest, M.WaitSandboxResponse, (r) => this.wait(r)),
        SandboxStatus: h<"SandboxStatus">(M.SandboxStatusRequest, M.SandboxStatusResponse, (r) => this.status(r)),
        PingSandbox: h<"PingSandbox">(M.PingRequest, M.PingResponse, (r) => this.ping(r)),
        ShutdownSandbox: h<"ShutdownSandbox">(M.ShutdownSandboxRequest, M.ShutdownSandboxResponse, (r) => this.shutdown(r)),
        SandboxMetrics: h<"SandboxMetrics">(M.SandboxMetricsRequest, M.SandboxMetricsResponse, (r) => this.metrics(r)),
      },
    };
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms).unref());
}
