/**
 * The pods part: RunPodSandbox, StopPodSandbox, RemovePodSandbox, PodSandboxStatus, ListPodSandbox and
 * the pod stats, on the sandbox service's `podsandbox` controller (CNI network and pause task) with a
 * sandbox Store record in `k8s.io`, as containerd 2.x's CRI runs pods.
 *
 * A pod's record is written (`creating`, its name reserved) before anything is made, and every step
 * after is undone when one fails; a restart finds `creating` records and undoes them the same way
 * (`recover`). The files a pod's containers mount (hostname, hosts, resolv.conf) are under
 * `<root>/sandboxes/<id>`, its /dev/shm a tmpfs at `<state>/sandboxes/<id>/shm`.
 */
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { background, withNamespace, type CallContext } from "#libs/context";
import { causeText, errInvalidArgument, errNotFound, isNotFound } from "#libs/errdefs";
import { OCI_SPEC_TYPE_URL, SANDBOX_LABELS, SANDBOXERS, SandboxState } from "#libs/core/sandbox";
import { SandboxControllerProxy, SandboxStoreProxy } from "#libs/clients/sandbox";
import { mountOne, unmountAll } from "#libs/mount";
import { nowNanos } from "#libs/time";
import type { Input } from "#libs/proto/types";
import { CRI_LABELS, CRI_NAMESPACE, NamespaceMode, type ContainersPart, type CriDeps, type PodRecord, type PodsPart, type PodSandboxConfig } from "../parts";
import { cgroupUsage } from "../stats";

/** Port mappings of a pod, as the podsandbox controller's annotation takes them (hostPort > 0 only). */
function portMappings(cfg: PodSandboxConfig): string | undefined {
  const protocols = ["tcp", "udp", "sctp"];
  const list = (cfg.port_mappings ?? [])
    .filter((p) => p.host_port > 0)
    .map((p) => ({ hostPort: p.host_port, containerPort: p.container_port, protocol: protocols[p.protocol] ?? "tcp", ...(p.host_ip ? { hostIP: p.host_ip } : {}) }));
  return list.length ? JSON.stringify(list) : undefined;
}

const HOSTS = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback", "fe00::0\tip6-localnet", "ff00::0\tip6-mcastprefix", "ff02::1\tip6-allnodes", "ff02::2\tip6-allrouters", ""].join("\n");

/** resolv.conf from the pod's DNS config, or the host's when it has none. */
function resolvConf(cfg: PodSandboxConfig): string {
  const dns = cfg.dns_config;
  if (!dns || (!dns.servers.length && !dns.searches.length && !dns.options.length)) {
    try {
      return fs.readFileSync("/etc/resolv.conf", "utf8");
    } catch {
      return "";
    }
  }
  const lines: string[] = [];
  if (dns.searches.length) lines.push(`search ${dns.searches.join(" ")}`);
  for (const s of dns.servers) lines.push(`nameserver ${s}`);
  if (dns.options.length) lines.push(`options ${dns.options.join(" ")}`);
  return lines.join("\n") + "\n";
}

/** containerd's CRI name of a pod: unique among pods, so a second RunPodSandbox of the same pod is refused. */
export function podName(cfg: PodSandboxConfig): string {
  const m = cfg.metadata;
  return [m?.name ?? "", m?.namespace ?? "", m?.uid ?? "", String(m?.attempt ?? 0)].join("_");
}

function matchesLabels(labels: Record<string, string>, selector: Record<string, string> | undefined): boolean {
  return Object.entries(selector ?? {}).every(([k, v]) => labels[k] === v);
}

export function createPods(deps: CriDeps, others: { containers(): ContainersPart }): PodsPart {
  const { store, log, config } = deps;
  const sandboxStore = new SandboxStoreProxy(deps.channel("sandbox"));
  const controllers = new Map<string, SandboxControllerProxy>();
  const controllerOf = (sandboxer: string): SandboxControllerProxy => {
    let c = controllers.get(sandboxer);
    if (!c) controllers.set(sandboxer, (c = new SandboxControllerProxy(deps.channel("sandbox"), sandboxer)));
    return c;
  };
  const k8s = (ctx?: CallContext): CallContext => (ctx ? withNamespace(ctx, CRI_NAMESPACE) : background(CRI_NAMESPACE));
  const podRoot = (id: string): string => path.join(deps.root, "sandboxes", id);
  const podState = (id: string): string => path.join(deps.state, "sandboxes", id);
  const watching = new Set<string>();
  let closed = false;

  /** The runtime handler's task runtime and sandboxer; InvalidArgument for a handler the config does not have. */
  function runtimeOf(handler: string): { handler: string; runtimeName: string; sandboxer: string } {
    const name = handler || config.containerd.default_runtime_name;
    const r = config.containerd.runtimes[name];
    if (!r) throw errInvalidArgument(`failed to get sandbox runtime: no runtime for ${JSON.stringify(handler)} is configured`);
    return { handler, runtimeName: r.runtime_type, sandboxer: r.sandboxer || SANDBOXERS.podsandbox };
  }

  /** The pod's files, and its /dev/shm unless it shares the host's IPC namespace. */
  function makeFiles(rec: PodRecord): void {
    fs.mkdirSync(podRoot(rec.id), { recursive: true, mode: 0o755 });
    const hostname = rec.config.hostname || os.hostname();
    const hostNet = rec.namespaces.network === NamespaceMode.NODE;
    fs.writeFileSync(rec.hostnamePath, `${hostname}\n`);
    fs.writeFileSync(rec.hostsPath, hostNet ? readOr("/etc/hosts", HOSTS) : HOSTS);
    fs.writeFileSync(rec.resolvPath, resolvConf(rec.config));
    if (rec.namespaces.ipc !== NamespaceMode.NODE) {
      fs.mkdirSync(rec.shmPath, { recursive: true, mode: 0o700 });
      mountOne({ type: "tmpfs", source: "shm", options: ["nodev", "noexec", "nosuid", "mode=1777", "size=65536k"] }, rec.shmPath);
    }
  }

  function removeFiles(id: string): void {
    const shm = path.join(podState(id), "shm");
    try {
      unmountAll(shm);
    } catch (err) {
      log.warn({ err: causeText(err), sandbox: id }, "unmounting a pod's /dev/shm");
    }
    fs.rmSync(podState(id), { recursive: true, force: true });
    fs.rmSync(podRoot(id), { recursive: true, force: true });
  }

  const ignoreNotFound = (e: unknown): void => {
    if (!isNotFound(e)) throw e;
  };

  /** Undo whatever a pod has in the other processes and on disk, then drop its record. */
  async function teardown(ctx: CallContext, rec: PodRecord): Promise<void> {
    const sandboxer = runtimeSandboxer(rec);
    await controllerOf(sandboxer).shutdown(ctx, rec.id).catch(ignoreNotFound);
    await sandboxStore.delete(ctx, rec.id).catch(ignoreNotFound);
    removeFiles(rec.id);
    await store.pods.delete(rec.id);
  }

  function runtimeSandboxer(rec: PodRecord): string {
    return config.containerd.runtimes[rec.runtimeHandler || config.containerd.default_runtime_name]?.sandboxer || SANDBOXERS.podsandbox;
  }

  /** Watch a ready pod's pause task; when it exits the pod is NOTREADY. */
  function watch(id: string): void {
    if (watching.has(id) || closed) return;
    watching.add(id);
    void (async () => {
      for (let delay = 500; !closed; delay = Math.min(delay * 2, 5000)) {
        const rec = store.pods.find(id);
        if (!rec || rec.state !== "ready") break;
        try {
          await controllerOf(runtimeSandboxer(rec)).wait(k8s({ ...background(CRI_NAMESPACE), signal: deps.stopping }), id);
          await store.pods.update(id, (r) => {
            if (r.state === "ready") Object.assign(r, { state: "notready", pid: 0 });
          }).catch(ignoreNotFound);
          break;
        } catch (e) {
          if (closed) break;
          if (isNotFound(e)) {
            await store.pods.update(id, (r) => Object.assign(r, { state: "notready", pid: 0 })).catch(ignoreNotFound);
            break;
          }
          await new Promise((r) => setTimeout(r, delay));
        }
      }
      watching.delete(id);
    })();
  }

  function toStatus(rec: PodRecord): Input["runtime.v1.PodSandboxStatus"] {
    return {
      id: rec.id,
      metadata: rec.config.metadata,
      state: rec.state === "ready" ? 0 : 1,
      created_at: rec.createdAt.toString(),
      network: { ip: rec.ips[0] ?? "", additional_ips: rec.ips.slice(1).map((ip) => ({ ip })) },
      linux: { namespaces: { options: { network: rec.namespaces.network, pid: rec.namespaces.pid, ipc: rec.namespaces.ipc, target_id: "" } } },
      labels: rec.config.labels,
      annotations: rec.config.annotations,
      runtime_handler: rec.runtimeHandler,
    };
  }

  async function statsOf(ctx: CallContext, rec: PodRecord): Promise<Input["runtime.v1.PodSandboxStats"]> {
    const attributes = { id: rec.id, metadata: rec.config.metadata, labels: rec.config.labels, annotations: rec.config.annotations };
    if (rec.state !== "ready") return { attributes, linux: { containers: [] } };
    const m = await controllerOf(runtimeSandboxer(rec)).metrics(ctx, rec.id);
    const usage = cgroupUsage(m.data, nowNanos());
    const containers: Input["runtime.v1.ContainerStats"][] = [];
    const cs = await others.containers().listStats(ctx, { filter: { id: "", pod_sandbox_id: rec.id, label_selector: {} } });
    containers.push(...(cs.stats ?? []));
    return { attributes, linux: { ...(usage ?? {}), containers } };
  }

  const part: PodsPart = {
    async run(ctx, req) {
      const cfg = req.config;
      if (!cfg?.metadata) throw errInvalidArgument("sandbox config must include metadata");
      if (!cfg.metadata.name || !cfg.metadata.uid || !cfg.metadata.namespace) throw errInvalidArgument("sandbox config metadata must include name, uid and namespace");
      const rt = runtimeOf(req.runtime_handler);
      const id = crypto.randomBytes(32).toString("hex");
      const nsOpts = cfg.linux?.security_context?.namespace_options;
      const rec: PodRecord = {
        id,
        name: podName(cfg),
        config: cfg,
        runtimeHandler: rt.handler,
        runtimeName: rt.runtimeName,
        state: "creating",
        createdAt: nowNanos(),
        pid: 0,
        netns: "",
        ips: [],
        namespaces: { network: nsOpts?.network ?? NamespaceMode.POD, pid: nsOpts?.pid ?? NamespaceMode.POD, ipc: nsOpts?.ipc ?? NamespaceMode.POD },
        cgroupParent: cfg.linux?.cgroup_parent ?? "",
        hostnamePath: path.join(podRoot(id), "hostname"),
        hostsPath: path.join(podRoot(id), "hosts"),
        resolvPath: path.join(podRoot(id), "resolv.conf"),
        shmPath: (nsOpts?.ipc ?? 0) === NamespaceMode.NODE ? "/dev/shm" : path.join(podState(id), "shm"),
        logDirectory: cfg.log_directory,
      };
      await store.pods.add(rec);
      const c = k8s(ctx);
      try {
        makeFiles(rec);
        const labels = { ...cfg.labels, [CRI_LABELS.kind]: "sandbox" };
        const hostname = cfg.hostname || os.hostname();
        const sandbox = {
          id,
          runtime: { name: rt.runtimeName },
          spec: { typeUrl: OCI_SPEC_TYPE_URL, value: Buffer.from(JSON.stringify({ hostname })) },
          labels,
          sandboxer: rt.sandboxer,
        };
        await sandboxStore.create(c, sandbox);
        const annotations: Record<string, string> = {
          ...cfg.annotations,
          [CRI_LABELS.sandboxId]: id,
          [CRI_LABELS.sandboxName]: cfg.metadata.name,
          [CRI_LABELS.sandboxNamespace]: cfg.metadata.namespace,
          [CRI_LABELS.sandboxUid]: cfg.metadata.uid,
          [CRI_LABELS.sandboxLogDir]: cfg.log_directory,
          [SANDBOX_LABELS.network]: rec.namespaces.network === NamespaceMode.NODE ? "host" : "cni",
          [SANDBOX_LABELS.cniConfDir]: config.cni.conf_dir,
          [SANDBOX_LABELS.cniBinDirs]: config.cni.bin_dir,
        };
        const ports = portMappings(cfg);
        if (ports) annotations[SANDBOX_LABELS.portMappings] = ports;
        if (rec.namespaces.pid === NamespaceMode.NODE) annotations[SANDBOX_LABELS.hostPid] = "true";
        if (rec.namespaces.ipc === NamespaceMode.NODE) annotations[SANDBOX_LABELS.hostIpc] = "true";
        if (Object.keys(cfg.linux?.sysctls ?? {}).length) annotations[SANDBOX_LABELS.sysctls] = JSON.stringify(cfg.linux!.sysctls);
        const ctrl = controllerOf(rt.sandboxer);
        await ctrl.create(c, sandbox, { annotations });
        const inst = await ctrl.start(c, id);
        const st = await ctrl.status(c, id);
        const ips = (st.info.ips ?? "").split(",").filter(Boolean);
        await store.pods.update(id, (r) => Object.assign(r, { state: "ready", pid: inst.pid, netns: st.info.netns ?? "", ips }));
      } catch (e) {
        log.warn({ err: causeText(e), sandbox: id }, "RunPodSandbox failed; undoing it");
        await teardown(k8s(), rec).catch((err: unknown) => log.warn({ err: causeText(err), sandbox: id }, "undoing a failed RunPodSandbox; left for recovery"));
        throw e;
      }
      watch(id);
      return { pod_sandbox_id: id };
    },

    async stop(ctx, req) {
      const rec = store.pods.get(req.pod_sandbox_id);
      await others.containers().stopPodContainers(rec.id, 0);
      await controllerOf(runtimeSandboxer(rec)).stop(k8s(ctx), rec.id).catch(ignoreNotFound);
      const shm = path.join(podState(rec.id), "shm");
      try {
        unmountAll(shm);
      } catch (err) {
        log.warn({ err: causeText(err), sandbox: rec.id }, "unmounting a pod's /dev/shm");
      }
      await store.pods.update(rec.id, (r) => Object.assign(r, { state: "notready", pid: 0, netns: "" }));
      return {};
    },

    async remove(ctx, req) {
      let rec: PodRecord;
      try {
        rec = store.pods.get(req.pod_sandbox_id);
      } catch (e) {
        if (isNotFound(e)) return {};
        throw e;
      }
      if (rec.state === "ready") await part.stop(ctx, { pod_sandbox_id: rec.id });
      await others.containers().removePodContainers(rec.id);
      await teardown(k8s(ctx), rec);
      return {};
    },

    async status(_ctx, req) {
      const rec = store.pods.get(req.pod_sandbox_id);
      const info: Record<string, string> = {};
      if (req.verbose) {
        info.info = JSON.stringify({
          pid: rec.pid,
          processStatus: rec.state === "ready" ? "running" : "stopped",
          netNamespacePath: rec.netns,
          runtimeHandler: rec.runtimeHandler,
          runtimeType: rec.runtimeName,
          config: rec.config,
          image: config.sandbox_image,
        });
      }
      return { status: toStatus(rec), info, containers_statuses: [], timestamp: nowNanos().toString() };
    },

    async list(_ctx, req) {
      const f = req.filter;
      const items = store.pods
        .list()
        .filter((r) => r.state !== "creating")
        .filter((r) => !f?.id || r.id.startsWith(f.id))
        .filter((r) => !f?.state || (f.state.state === 0) === (r.state === "ready"))
        .filter((r) => matchesLabels(r.config.labels, f?.label_selector))
        .map((r) => {
          const s = toStatus(r);
          return { id: s.id, metadata: s.metadata, state: s.state, created_at: s.created_at, labels: s.labels, annotations: s.annotations, runtime_handler: s.runtime_handler };
        });
      return { items };
    },

    async stats(ctx, req) {
      return { stats: await statsOf(k8s(ctx), store.pods.get(req.pod_sandbox_id)) };
    },

    async listStats(ctx, req) {
      const f = req.filter;
      const pods = store.pods
        .list()
        .filter((r) => r.state === "ready")
        .filter((r) => !f?.id || r.id.startsWith(f.id))
        .filter((r) => matchesLabels(r.config.labels, f?.label_selector));
      const stats: Input["runtime.v1.PodSandboxStats"][] = [];
      for (const r of pods) {
        try {
          stats.push(await statsOf(k8s(ctx), r));
        } catch (e) {
          if (!isNotFound(e)) log.debug({ err: causeText(e), sandbox: r.id }, "pod stats");
        }
      }
      return { stats };
    },

    async get(podId) {
      const rec = store.pods.get(podId);
      if (rec.state === "creating") throw errNotFound(`sandbox ${JSON.stringify(podId)} not found`);
      return rec;
    },

    async recover() {
      for (const rec of store.pods.list()) {
        if (rec.state === "creating") {
          log.info({ sandbox: rec.id }, "undoing an interrupted RunPodSandbox");
          await teardown(k8s(), rec).catch((err: unknown) => log.warn({ err: causeText(err), sandbox: rec.id }, "undoing an interrupted RunPodSandbox; will retry at the next start"));
          continue;
        }
        if (rec.state !== "ready") continue;
        try {
          const st = await controllerOf(runtimeSandboxer(rec)).status(k8s(), rec.id);
          if (st.state !== SandboxState.Ready) await store.pods.update(rec.id, (r) => Object.assign(r, { state: "notready", pid: 0 }));
          else watch(rec.id);
        } catch (e) {
          if (isNotFound(e)) await store.pods.update(rec.id, (r) => Object.assign(r, { state: "notready", pid: 0 }));
          else watch(rec.id); // the sandbox process is not up yet: the watch retries
        }
      }
    },

    async close() {
      closed = true;
    },
  };
  return part;
}

function readOr(file: string, fallback: string): string {
  try {
    return fs.readFileSync(file, "utf8");
  } catch {
    return fallback;
  }
}
