/**
 * `flotilla sandbox run|ls|inspect|stop|rm` and `flotilla run --sandbox ID IMAGE [CMD...]`: pod
 * sandboxes for users, entirely through the gateway's containerd API (Sandbox Store and Controller,
 * Images, Content, Snapshots, Containers, Tasks), as any containerd client would drive them.
 */
import { spawnSync } from "node:child_process";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { loadConfig } from "../libs/config";
import { background, withLease, type CallContext } from "../libs/context";
import { causeText, errInvalidArgument, errFailedPrecondition, isNotFound } from "../libs/errdefs";
import { ChannelPool } from "../libs/grpc/client";
import { ContentStoreProxy } from "../libs/clients/content";
import { ImageStoreProxy } from "../libs/clients/images";
import { LeaseManagerProxy } from "../libs/clients/leases";
import { SnapshotterProxy } from "../libs/clients/snapshots";
import { ContainerStoreProxy } from "../libs/clients/containers";
import { SandboxControllerProxy, SandboxStoreProxy } from "../libs/clients/sandbox";
import { TaskServiceProxy } from "../libs/clients/tasks";
import { GC_LABELS } from "../libs/core/gc";
import { DEFAULT_SANDBOX_RUNTIME, OCI_SPEC_TYPE_URL, SANDBOX_LABELS, SandboxState, SANDBOXERS, type Sandbox } from "../libs/core/sandbox";
import { resolveImage, sandboxMemberSpec } from "../libs/sandboxrun";
import { table } from "./table";

const SANDBOX_USAGE = `usage: flotilla sandbox <command> [options]

commands:
  run [--network cni|none|host] [-p HOST:CONTAINER[/PROTO]]... [--label K=V]... [--hostname NAME]
      [--runtime NAME] [--sandboxer podsandbox|shim] ID
                          create and start a pod sandbox (its own network namespace with CNI)
  ls [-q] [FILTER...]     list sandboxes (filters as containerd's: id==x, labels.app==web)
  inspect ID              the sandbox record and its controller status, as JSON
  stop [-t SECS] ID...    stop sandboxes and the containers in them
  rm [-f] ID...           remove stopped sandboxes (-f: stop them first) and their containers

global options: -a/--address SOCKET, -n/--namespace NS (default "default"), -c/--config FILE
`;

const RUN_USAGE = `usage: flotilla run --sandbox ID [-d] [--rm] [--name NAME] [--env K=V]... [--cwd DIR] [--user UID[:GID]]
                    [--snapshotter NAME] IMAGE [CMD [ARG...]]
  run a container from a pulled (unpacked) image inside a running pod sandbox: it shares the pod's
  network, IPC and UTS namespaces and its shim. Without -d it waits and exits with the command's status.
`;

interface Globals {
  address: string;
  namespace: string;
  /** The command's gRPC channels (closed when it ends). */
  channels: ChannelPool;
}

interface Parsed {
  globals: Globals;
  opts: Map<string, string[]>;
  flags: Set<string>;
  positionals: string[];
}

/**
 * A small argv parser: `valued` options take the next word (or `--x=v`), `flagNames` take none. With
 * `stopAtPositional`, everything from the `stopAfter`-th positional on is kept verbatim (a command line).
 */
function parse(argv: string[], valued: Record<string, string>, flagNames: Record<string, string>, stopAfter = Infinity, channels = new ChannelPool()): Parsed {
  const v: Record<string, string> = { "-a": "address", "--address": "address", "-n": "namespace", "--namespace": "namespace", "-c": "config", "--config": "config", ...valued };
  const opts = new Map<string, string[]>();
  const flags = new Set<string>();
  const positionals: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (positionals.length >= stopAfter) {
      positionals.push(...argv.slice(i));
      break;
    }
    if (a === "--") {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    const eq = a.startsWith("--") ? a.indexOf("=") : -1;
    const name = eq > 0 ? a.slice(0, eq) : a;
    if (v[name]) {
      const val = eq > 0 ? a.slice(eq + 1) : argv[++i];
      if (val === undefined) throw errInvalidArgument(`option ${name} needs a value`);
      opts.set(v[name]!, [...(opts.get(v[name]!) ?? []), val]);
    } else if (flagNames[name]) {
      flags.add(flagNames[name]!);
    } else if (a.startsWith("-") && a !== "-") {
      throw errInvalidArgument(`unknown option ${a}`);
    } else {
      positionals.push(a);
    }
  }
  const config = opts.get("config")?.at(-1) ?? process.env.FLOTILLA_CONFIG;
  const address = opts.get("address")?.at(-1) ?? process.env.FLOTILLA_ADDRESS ?? process.env.CONTAINERD_ADDRESS ?? loadConfig(config || undefined).grpc.address;
  const namespace = opts.get("namespace")?.at(-1) ?? process.env.CONTAINERD_NAMESPACE ?? "default";
  return { globals: { address, namespace, channels }, opts, flags, positionals };
}

const one = (p: Parsed, k: string): string | undefined => p.opts.get(k)?.at(-1);

function keyValues(list: string[] | undefined, what: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const kv of list ?? []) {
    const i = kv.indexOf("=");
    if (i <= 0) throw errInvalidArgument(`${what} ${JSON.stringify(kv)}: want KEY=VALUE`);
    out[kv.slice(0, i)] = kv.slice(i + 1);
  }
  return out;
}

function portMappings(list: string[] | undefined): { hostPort: number; containerPort: number; protocol: string }[] {
  return (list ?? []).map((p) => {
    const m = /^(?:(\d+\.\d+\.\d+\.\d+):)?(\d+):(\d+)(?:\/(tcp|udp|sctp))?$/.exec(p);
    if (!m) throw errInvalidArgument(`port mapping ${JSON.stringify(p)}: want HOST:CONTAINER[/PROTO]`);
    return { ...(m[1] ? { hostIP: m[1] } : {}), hostPort: Number(m[2]), containerPort: Number(m[3]), protocol: m[4] ?? "tcp" };
  });
}

function out(s: string): void {
  process.stdout.write(s.endsWith("\n") ? s : s + "\n");
}

class Clients {
  readonly ctx: CallContext;
  readonly store: SandboxStoreProxy;
  constructor(readonly g: Globals) {
    this.ctx = background(g.namespace);
    this.store = new SandboxStoreProxy(g.channels.get(g.address));
  }
  controller(sandboxer: string): SandboxControllerProxy {
    return new SandboxControllerProxy(this.g.channels.get(this.g.address), sandboxer);
  }
}

async function sandboxRun(p: Parsed): Promise<number> {
  const [id, ...extra] = p.positionals;
  if (!id || extra.length) throw errInvalidArgument("sandbox run takes exactly one sandbox ID");
  const c = new Clients(p.globals);
  const sandboxer = one(p, "sandboxer") ?? SANDBOXERS.podsandbox;
  const annotations: Record<string, string> = {};
  const network = one(p, "network");
  if (network) annotations[SANDBOX_LABELS.network] = network;
  const ports = portMappings(p.opts.get("publish"));
  if (ports.length) annotations[SANDBOX_LABELS.portMappings] = JSON.stringify(ports);
  const hostname = one(p, "hostname");
  const spec = hostname ? { typeUrl: OCI_SPEC_TYPE_URL, value: Buffer.from(JSON.stringify({ ociVersion: "1.0.2-dev", hostname })) } : undefined;
  const sb = await c.store.create(c.ctx, { id, runtime: { name: one(p, "runtime") ?? DEFAULT_SANDBOX_RUNTIME }, labels: keyValues(p.opts.get("label"), "label"), sandboxer, ...(spec ? { spec } : {}) });
  const ctl = c.controller(sandboxer);
  let created = false;
  try {
    await ctl.create(c.ctx, sb, { annotations });
    created = true;
    await ctl.start(c.ctx, id);
  } catch (e) {
    if (created) await ctl.shutdown(c.ctx, id).catch(() => undefined);
    await c.store.delete(c.ctx, id).catch(() => undefined);
    throw e;
  }
  const st = await ctl.status(c.ctx, id);
  out(`${id}${st.info.ips ? ` ${st.info.ips}` : ""}`);
  return 0;
}

async function statusOf(c: Clients, sb: Sandbox): Promise<{ state: string; ips: string; pid: number; info: Record<string, string> }> {
  try {
    const st = await c.controller(sb.sandboxer).status(c.ctx, sb.id);
    return { state: st.state, ips: st.info.ips ?? "", pid: st.pid, info: st.info };
  } catch (e) {
    return { state: isNotFound(e) ? "NOT_CREATED" : `ERROR: ${causeText(e)}`, ips: "", pid: 0, info: {} };
  }
}

async function sandboxLs(p: Parsed): Promise<number> {
  const c = new Clients(p.globals);
  const list = await c.store.list(c.ctx, p.positionals);
  if (p.flags.has("quiet")) {
    for (const sb of list) out(sb.id);
    return 0;
  }
  const rows = [["SANDBOX", "STATE", "IP", "PID", "SANDBOXER", "RUNTIME", "CREATED"]];
  for (const sb of list) {
    const st = await statusOf(c, sb);
    rows.push([sb.id, st.state.replace(/^SANDBOX_/, ""), st.ips || "-", st.pid ? String(st.pid) : "-", sb.sandboxer || "-", sb.runtime.name, sb.createdAt.toISOString()]);
  }
  out(table(rows));
  return 0;
}

async function sandboxInspect(p: Parsed): Promise<number> {
  const c = new Clients(p.globals);
  if (p.positionals.length === 0) throw errInvalidArgument("sandbox inspect needs a sandbox ID");
  const all: unknown[] = [];
  for (const id of p.positionals) {
    const sb = await c.store.get(c.ctx, id);
    let status: unknown;
    try {
      const st = await c.controller(sb.sandboxer).status(c.ctx, id, true);
      const { info, ...rest } = st;
      const details = info.info ? JSON.parse(info.info) as unknown : undefined;
      status = { ...rest, info: { ...info, info: undefined }, ...(details ? { details } : {}) };
    } catch (e) {
      status = { error: causeText(e) };
    }
    const text = (v: { typeUrl: string; value: Uint8Array } | undefined): unknown => {
      if (!v) return undefined;
      const s = Buffer.from(v.value).toString("utf8");
      try {
        return { type_url: v.typeUrl, value: JSON.parse(s) as unknown };
      } catch {
        return { type_url: v.typeUrl, value: Buffer.from(v.value).toString("base64") };
      }
    };
    all.push({
      id: sb.id,
      sandboxer: sb.sandboxer,
      runtime: { name: sb.runtime.name, options: text(sb.runtime.options) },
      labels: sb.labels,
      spec: text(sb.spec),
      extensions: Object.fromEntries(Object.entries(sb.extensions).map(([k, v]) => [k, text(v)])),
      created_at: sb.createdAt.toISOString(),
      updated_at: sb.updatedAt.toISOString(),
      status,
    });
  }
  out(JSON.stringify(all.length === 1 ? all[0] : all, null, 2));
  return 0;
}

async function sandboxStop(p: Parsed): Promise<number> {
  const c = new Clients(p.globals);
  if (p.positionals.length === 0) throw errInvalidArgument("sandbox stop needs a sandbox ID");
  const t = one(p, "timeout");
  const timeoutSecs = t === undefined ? 10 : Number(t);
  if (!Number.isInteger(timeoutSecs) || timeoutSecs < 0) throw errInvalidArgument(`timeout ${JSON.stringify(t)}: want whole seconds`);
  let rc = 0;
  for (const id of p.positionals) {
    try {
      const sb = await c.store.get(c.ctx, id);
      await c.controller(sb.sandboxer).stop(c.ctx, id, { timeoutSecs });
      out(id);
    } catch (e) {
      process.stderr.write(`flotilla: sandbox ${id}: ${(e as Error).message}\n`);
      rc = 1;
    }
  }
  return rc;
}

async function sandboxRm(p: Parsed): Promise<number> {
  const c = new Clients(p.globals);
  if (p.positionals.length === 0) throw errInvalidArgument("sandbox rm needs a sandbox ID");
  let rc = 0;
  for (const id of p.positionals) {
    try {
      const sb = await c.store.get(c.ctx, id);
      const ctl = c.controller(sb.sandboxer);
      const st = await statusOf(c, sb);
      if (st.state === SandboxState.Ready && !p.flags.has("force")) throw errFailedPrecondition(`sandbox ${JSON.stringify(id)} is running: stop it first or use rm -f`);
      try {
        await ctl.shutdown(c.ctx, id);
      } catch (e) {
        if (!isNotFound(e)) throw e;
      }
      await c.store.delete(c.ctx, id);
      out(id);
    } catch (e) {
      process.stderr.write(`flotilla: sandbox ${id}: ${(e as Error).message}\n`);
      rc = 1;
    }
  }
  return rc;
}

/** `flotilla sandbox ...`; resolves with the exit code. */
export async function sandboxCommand(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  const channels = new ChannelPool();
  const parseWith = (args: string[], valued: Record<string, string>, flagNames: Record<string, string>): Parsed => parse(args, valued, flagNames, Infinity, channels);
  try {
    switch (cmd) {
      case "run":
        return await sandboxRun(parseWith(rest, { "--network": "network", "-p": "publish", "--publish": "publish", "--label": "label", "-l": "label", "--hostname": "hostname", "--runtime": "runtime", "--sandboxer": "sandboxer" }, {}));
      case "ls":
      case "list":
        return await sandboxLs(parseWith(rest, {}, { "-q": "quiet", "--quiet": "quiet" }));
      case "inspect":
        return await sandboxInspect(parseWith(rest, {}, {}));
      case "stop":
        return await sandboxStop(parseWith(rest, { "-t": "timeout", "--timeout": "timeout" }, {}));
      case "rm":
      case "remove":
        return await sandboxRm(parseWith(rest, {}, { "-f": "force", "--force": "force" }));
      case undefined:
      case "help":
      case "--help":
      case "-h":
        process.stdout.write(SANDBOX_USAGE);
        return cmd === undefined ? 1 : 0;
      default:
        process.stderr.write(`flotilla sandbox: unknown command ${JSON.stringify(cmd)}\n${SANDBOX_USAGE}`);
        return 1;
    }
  } catch (e) {
    process.stderr.write(`flotilla: ${(e as Error).message}\n`);
    return 1;
  } finally {
    channels.close();
  }
}

/** Output FIFOs for a foreground container, read without blocking the event loop (opened O_RDWR). */
function openFifos(id: string): { dir: string; stdout: string; stderr: string; done(): Promise<void> } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "flotilla-fifo-"));
  const stdout = path.join(dir, `${id}-stdout`);
  const stderr = path.join(dir, `${id}-stderr`);
  const r = spawnSync("mkfifo", ["-m", "0600", stdout, stderr]);
  if (r.status !== 0) throw errFailedPrecondition(`mkfifo: ${r.stderr?.toString().trim()}`);
  const socks = [
    [stdout, process.stdout],
    [stderr, process.stderr],
  ].map(([p, sink]) => {
    const s = new net.Socket({ fd: fs.openSync(p as string, fs.constants.O_RDWR | fs.constants.O_NONBLOCK), readable: true, writable: false });
    s.pipe(sink as NodeJS.WritableStream, { end: false });
    return s;
  });
  return {
    dir, stdout, stderr,
    done: async () => {
      // The shim flushed the output before Wait answered; give the pipe a moment to drain to us.
      await new Promise((res) => setTimeout(res, 150));
      for (const s of socks) s.destroy();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** `flotilla run --sandbox ID IMAGE [CMD...]`; resolves with the exit code. */
export async function runCommand(argv: string[]): Promise<number> {
  let p: Parsed;
  try {
    p = parse(argv, { "--sandbox": "sandbox", "--name": "name", "--env": "env", "-e": "env", "--cwd": "cwd", "--user": "user", "-u": "user", "--snapshotter": "snapshotter" }, { "-d": "detach", "--detach": "detach", "--rm": "rm", "-h": "help", "--help": "help" }, 1);
  } catch (e) {
    process.stderr.write(`flotilla: ${(e as Error).message}\n${RUN_USAGE}`);
    return 1;
  }
  if (p.flags.has("help")) {
    process.stdout.write(RUN_USAGE);
    return 0;
  }
  const sandboxId = one(p, "sandbox");
  const [image, ...cmd] = p.positionals;
  if (!sandboxId || !image) {
    process.stderr.write(`flotilla: run needs --sandbox ID and an IMAGE\n${RUN_USAGE}`);
    return 1;
  }
  const g = p.globals;
  let ctx = background(g.namespace);
  const id = one(p, "name") ?? `${sandboxId.slice(0, 40)}-${crypto.randomBytes(4).toString("hex")}`;
  const snapshotterName = one(p, "snapshotter") ?? "overlayfs";
  const snapshots = SnapshotterProxy.connect(g.channels.get(g.address), snapshotterName);
  const containers = new ContainerStoreProxy(g.channels.get(g.address));
  const tasks = new TaskServiceProxy(g.channels.get(g.address));
  const undo: (() => Promise<unknown>)[] = [];
  const cleanup = async (): Promise<void> => {
    for (const u of undo.reverse()) await u().catch(() => undefined);
  };
  let fifos: ReturnType<typeof openFifos> | undefined;
  const leases = new LeaseManagerProxy(g.channels.get(g.address));
  let lease: string | undefined;
  try {
    // As ctr does: everything made for the member is held by a lease until the command ends. The
    // snapshot is prepared before the container that references it exists, and a collection in
    // between would otherwise take it (its directories gone before the shim mounts them).
    const expire = new Date(Date.now() + 24 * 3600 * 1000).toISOString().replace(/\.\d+Z$/, "Z");
    lease = (await leases.create(ctx, { id: `flotilla-run-${crypto.randomBytes(8).toString("hex")}`, labels: { [GC_LABELS.expire]: expire } })).id;
    ctx = withLease(ctx, lease);
    const sb = await new SandboxStoreProxy(g.channels.get(g.address)).get(ctx, sandboxId);
    const st = await new SandboxControllerProxy(g.channels.get(g.address), sb.sandboxer).status(ctx, sandboxId);
    if (st.state !== SandboxState.Ready) throw errFailedPrecondition(`sandbox ${JSON.stringify(sandboxId)} is not ready (${st.state})`);
    const img = await resolveImage(ctx, new ImageStoreProxy(g.channels.get(g.address)), new ContentStoreProxy(g.channels.get(g.address)), image);
    const args = cmd.length ? cmd : [...img.entrypoint, ...img.cmd];
    const spec = sandboxMemberSpec({
      namespace: g.namespace,
      id,
      sandboxId,
      pausePid: st.pid,
      netns: st.info.network === "host" ? "" : st.info.netns || `/proc/${st.pid}/ns/net`,
      args,
      env: [...img.env, ...(p.opts.get("env") ?? [])],
      cwd: one(p, "cwd") ?? img.workingDir,
      user: one(p, "user") ?? img.user,
    });
    let mounts;
    try {
      mounts = await snapshots.prepare(ctx, id, img.chainId, { labels: {} });
    } catch (e) {
      if (isNotFound(e)) throw errFailedPrecondition(`image ${JSON.stringify(image)} is not unpacked in ${snapshotterName} (pull it with ctr, which unpacks): ${causeText(e)}`);
      throw e;
    }
    undo.push(() => snapshots.remove(ctx, id));
    await containers.create(ctx, {
      id,
      image,
      labels: { [SANDBOX_LABELS.criSandboxId]: sandboxId },
      runtime: { name: sb.runtime.name || DEFAULT_SANDBOX_RUNTIME },
      spec: { typeUrl: OCI_SPEC_TYPE_URL, value: Buffer.from(JSON.stringify(spec)) },
      snapshotter: snapshotterName,
      snapshotKey: id,
      sandbox: sandboxId,
    });
    undo.push(() => containers.delete(ctx, id));
    const detach = p.flags.has("detach");
    if (!detach) fifos = openFifos(id);
    await tasks.create(ctx, {
      containerId: id,
      rootfs: mounts,
      io: { stdin: "", stdout: fifos?.stdout ?? "", stderr: fifos?.stderr ?? "", terminal: false },
      ...(sb.sandboxer === SANDBOXERS.shim && st.address ? { taskApiAddress: st.address, taskApiVersion: st.version } : {}),
    });
    undo.push(() => tasks.delete(ctx, id));
    const waiting = detach ? undefined : tasks.wait(ctx, id);
    waiting?.catch(() => undefined);
    await tasks.start(ctx, id);
    if (detach) {
      out(id);
      return 0;
    }
    const exit = await waiting!;
    await fifos!.done();
    fifos = undefined;
    if (p.flags.has("rm")) await cleanup();
    return exit.exitStatus;
  } catch (e) {
    await cleanup();
    process.stderr.write(`flotilla: ${(e as Error).message}\n`);
    return 1;
  } finally {
    await fifos?.done();
    if (lease) await leases.delete(withLease(ctx, undefined), lease).catch(() => undefined);
    g.channels.close();
  }
}
