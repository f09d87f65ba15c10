/**
 * CRI tests: a Flotilla stack with containerd's CRI config tables (as the conformance kit's example
 * config has them) on a test network of its own, and the real `crictl` of the conformance kit
 * (unpacked once per test process) pointed at the gateway's socket.
 */
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { repoRoot } from "#libs/proto";
import { runCommand, startStack, type CtrOptions, type CtrResult, type Stack } from "#test/harness";
import { makeTestNet, type TestNet } from "#test/sandbox/net-helpers";

/** The conformance kit (critest, crictl, fixture images, mirrors). */
/** The CRI conformance kit (critest, crictl, fixture builder), kept in the repository so a clean clone runs it offline. */
export const CRI_KIT = process.env.CRI_CONFORMANCE_KIT ?? path.join(repoRoot(), "third_party", "cri-conformance");

let crictlBin: string | undefined;
/** The kit's crictl, unpacked under the temp dir (once per process). */
export function crictlPath(): string {
  if (crictlBin) return crictlBin;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "flt-crictl-"));
  const bin = path.join(dir, "crictl");
  fs.writeFileSync(bin, execFileSync("xz", ["-dc", path.join(CRI_KIT, "bin", "crictl.xz")], { maxBuffer: 256 * 1024 * 1024 }), { mode: 0o755 });
  process.once("exit", () => fs.rmSync(dir, { recursive: true, force: true }));
  return (crictlBin = bin);
}

/** The kit's mirror hosts.toml files under `dir`/certs.d, pointing at `registry` instead of the kit's 127.0.0.1:5001; the certs.d path. */
export function mirrorHosts(dir: string, registry: string): string {
  const out = path.join(dir, "certs.d");
  for (const host of fs.readdirSync(path.join(CRI_KIT, "hosts"))) {
    const src = path.join(CRI_KIT, "hosts", host, "hosts.toml");
    if (!fs.existsSync(src)) continue;
    fs.mkdirSync(path.join(out, host), { recursive: true });
    fs.writeFileSync(path.join(out, host, "hosts.toml"), fs.readFileSync(src, "utf8").replaceAll("127.0.0.1:5001", registry));
  }
  return out;
}

/** The kit's crictl against a CRI socket (runtime and image endpoint). */
export function crictlOn(socket: string): (args: string[], opts?: Omit<CtrOptions, "namespace">) => Promise<CtrResult> {
  const bin = crictlPath();
  return (args, o = {}) => runCommand(bin, ["--timeout", "60s", "-r", `unix://${socket}`, "-i", `unix://${socket}`, ...args], { timeoutMs: 90_000, ...o });
}

export interface CriStack extends Stack {
  net: TestNet;
  /** Run crictl against the gateway's socket (runtime and image endpoint). */
  crictl(args: string[], opts?: Omit<CtrOptions, "namespace">): Promise<CtrResult>;
  /** crictl that must succeed; its stdout. */
  crictlOk(args: string[], opts?: Omit<CtrOptions, "namespace">): Promise<string>;
  /** Write a JSON config (pod or container) into the stack's dir; its path. */
  writeConfig(name: string, config: unknown): string;
  stop(): Promise<void>;
}

/** `[plugins."io.containerd.grpc.v1.cri"]` of the kit's example config, on `net` and with `extra` lines in the top table. */
export function criToml(net: TestNet, opts: { registryConfigPath?: string; extra?: string[] } = {}): string {
  const t = '[plugins."io.containerd.grpc.v1.cri"]';
  return [
    t,
    'sandbox_image = "registry.k8s.io/pause:3.6"',
    'stream_server_address = "127.0.0.1"',
    'stream_server_port = "0"',
    "enable_selinux = false",
    "restrict_oom_score_adj = true",
    ...(opts.extra ?? []),
    `[plugins."io.containerd.grpc.v1.cri".containerd]`,
    'snapshotter = "overlayfs"',
    'default_runtime_name = "runc"',
    `[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]`,
    'runtime_type = "io.containerd.runc.v2"',
    `[plugins."io.containerd.grpc.v1.cri".cni]`,
    'bin_dir = "/usr/lib/cni"',
    `conf_dir = ${JSON.stringify(net.confDir)}`,
    "max_conf_num = 1",
    ...(opts.registryConfigPath ? [`[plugins."io.containerd.grpc.v1.cri".registry]`, `config_path = ${JSON.stringify(opts.registryConfigPath)}`] : []),
  ].join("\n");
}

/** A stack with the CRI configured as the conformance kit configures containerd, on a test network with portmap. */
export async function startCriStack(opts: { registryConfigPath?: string; extraToml?: string; criExtra?: string[] } = {}): Promise<CriStack> {
  // As the kit's conflist: portmap with its default SNAT, so hostPorts answer on 127.0.0.1 (critest asks there).
  const net = makeTestNet({ portmap: true, portmapSnat: true });
  let stack: Stack;
  try {
    const crictlOpts = { ...(opts.registryConfigPath ? { registryConfigPath: opts.registryConfigPath } : {}), ...(opts.criExtra ? { extra: opts.criExtra } : {}) };
    stack = await startStack({ logLevel: "warn", extraToml: [criToml(net, crictlOpts), opts.extraToml ?? ""].join("\n") });
  } catch (e) {
    net.cleanup();
    throw e;
  }
  const crictl = crictlOn(stack.socket);
  const stopStack = stack.stop;
  return Object.assign(stack, {
    net,
    crictl,
    crictlOk: async (args: string[], o: Omit<CtrOptions, "namespace"> = {}) => {
      const r = await crictl(args, o);
      if (r.code !== 0) throw new Error(`crictl ${args.join(" ")} failed (${r.code}): ${r.stderr}${r.stdout}`);
      return r.stdout;
    },
    writeConfig: (name: string, config: unknown) => {
      const f = path.join(stack.dir, `${name}.json`);
      fs.writeFileSync(f, JSON.stringify(config));
      return f;
    },
    stop: async () => {
      try {
        await stopStack();
      } finally {
        net.cleanup();
      }
    },
  });
}

/** A pod config as crictl reads it (JSON, the CRI's field names). */
export function podConfig(name: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { metadata: { name, namespace: "flt-test", uid: `uid-${name}`, attempt: 1 }, log_directory: "", linux: {}, ...extra };
}
