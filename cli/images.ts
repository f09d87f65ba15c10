/**
 * `flotilla images pull|push|import|export|tag`: the Transfer API through the gateway, with live
 * progress bars (per blob: state, bytes, rate) on a terminal and plain lines otherwise.
 */
import * as fs from "node:fs";
import { parseArgs } from "node:util";
import { background } from "../libs/context";
import { ChannelPool } from "../libs/grpc/client";
import { loadConfig, configPathFromArgv } from "../libs/config";
import { TransferClient, type RegistryOptions } from "../libs/clients/transfer";
import type { ProgressEvent, RegistryCredentials } from "../libs/core/transfer";
import { formatPlatform, hostPlatform, parsePlatform, type Platform } from "../libs/oci";
import { formatReference, normalizeReference } from "../libs/registry";

const USAGE = `usage: flotilla images <command> [options]

commands:
  pull [options] REF             fetch an image from a registry and unpack it
  push [options] REF [LOCAL]     upload the local image LOCAL (default REF) to REF
  import [options] FILE|-        import an OCI layout or docker save archive
  export [options] OUT|- REF...  write images as an OCI archive
  tag [--force] SRC DST...       give an image more names

common options:
  -a, --address PATH     gateway socket (env CONTAINERD_ADDRESS; default from --config)
  -n, --namespace NS     namespace (env CONTAINERD_NAMESPACE; default "default")
      --config FILE      read the socket path from a Flotilla config
      --plain-http       talk HTTP to the registry
      --hosts-dir DIR    registry hosts directory (<host>/hosts.toml)
  -u, --user USER[:PW]   registry credentials (password also from env FLOTILLA_REGISTRY_PASSWORD)
      --platform P       os/arch[/variant], repeatable (default: this machine)
      --all-platforms    every platform
      --snapshotter S    snapshotter to unpack into (default: the namespace's, else overlayfs)
      --no-unpack        do not unpack (pull, import)
      --label K=V        image label (pull, import), repeatable
      --base-name NAME   import: name images "<NAME>:<tag>" from their ref.name annotation
      --index-name NAME  import: also name the whole archive index NAME
      --compress         import: store uncompressed docker layers gzip-compressed
      --skip-manifest-json  export: no docker manifest.json
      --force            tag: replace an existing name
      --plain            plain progress lines even on a terminal
      --http-debug       print the transfer service's registry HTTP exchanges (stderr)
`;

const OPTIONS = {
  address: { type: "string", short: "a" },
  namespace: { type: "string", short: "n" },
  config: { type: "string", short: "c" },
  "plain-http": { type: "boolean" },
  "hosts-dir": { type: "string" },
  user: { type: "string", short: "u" },
  platform: { type: "string", multiple: true },
  "all-platforms": { type: "boolean" },
  snapshotter: { type: "string" },
  "no-unpack": { type: "boolean" },
  label: { type: "string", multiple: true },
  "base-name": { type: "string" },
  "index-name": { type: "string" },
  compress: { type: "boolean" },
  "skip-manifest-json": { type: "boolean" },
  force: { type: "boolean" },
  plain: { type: "boolean" },
  "http-debug": { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const;

type Values = ReturnType<typeof parseArgs<{ options: typeof OPTIONS; allowPositionals: true }>>["values"];

// ---- progress display ----

interface Job {
  name: string;
  state: string;
  progress: number;
  total: number;
  rate: number;
  lastBytes: number;
  lastAt: number;
  order: number;
}

const MiB = 1024 * 1024;
export function humanBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < MiB) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 * MiB) return `${(n / MiB).toFixed(1)} MiB`;
  return `${(n / 1024 / MiB).toFixed(2)} GiB`;
}

function shortName(name: string): string {
  const m = /^([a-z]+)-(sha256:[0-9a-f]{12})[0-9a-f]*$/.exec(name);
  return m ? `${m[1]}-${m[2]}` : name;
}

const DONE = new Set(["complete", "already exists", "extracted", "pushed content", "saved"]);

/** Live bars on a terminal, plain lines otherwise. */
export class ProgressView {
  private readonly jobs = new Map<string, Job>();
  private drawn = 0;
  private timer?: NodeJS.Timeout;
  private readonly started = Date.now();
  private bytes = 0;

  constructor(private readonly out: NodeJS.WritableStream & { columns?: number }, private readonly tty: boolean) {
    if (tty) this.timer = setInterval(() => this.render(), 100);
  }

  update(p: ProgressEvent): void {
    if (!p.name || (!p.desc && !p.total && p.event !== "saved")) {
      this.message(p.name && p.event === "fetching image content" ? `${p.event}: ${p.name}` : p.event);
      return;
    }
    if (p.event === "saved") {
      this.message(`saved ${p.name}${p.desc ? ` (${p.desc.digest})` : ""}`);
      return;
    }
    let j = this.jobs.get(p.name);
    const now = Date.now();
    const isNew = !j;
    if (!j) {
      j = { name: p.name, state: p.event, progress: 0, total: Number(p.total ?? 0), rate: 0, lastBytes: 0, lastAt: now, order: this.jobs.size };
      this.jobs.set(p.name, j);
    }
    const prevState = j.state;
    const prog = Number(p.progress ?? 0);
    if (prog > j.progress) {
      const dt = (now - j.lastAt) / 1000;
      if (dt > 0.05) {
        const r = (prog - j.lastBytes) / dt;
        j.rate = j.rate ? j.rate * 0.5 + r * 0.5 : r;
        j.lastBytes = prog;
        j.lastAt = now;
      }
      if (p.event !== "already exists" && p.event !== "extracting" && p.event !== "extracted") this.bytes += prog - j.progress;
      j.progress = prog;
    }
    if (p.total) j.total = Number(p.total);
    if (!(DONE.has(j.state) && p.event === "waiting")) j.state = p.event;
    if (!this.tty && (isNew || j.state !== prevState)) {
      this.out.write(`${shortName(j.name)}: ${j.state}${j.total ? ` ${humanBytes(j.progress)}/${humanBytes(j.total)}` : ""}\n`);
    }
  }

  message(text: string): void {
    if (!text) return;
    if (!this.tty) {
      this.out.write(text + "\n");
      return;
    }
    this.clear();
    this.out.write(text + "\n");
    this.render();
  }

  private clear(): void {
    if (this.drawn) this.out.write(`\x1b[${this.drawn}A\x1b[0J`);
    this.drawn = 0;
  }

  private line(j: Job, width: number): string {
    const name = shortName(j.name).padEnd(27);
    const state = j.state.padEnd(15);
    const frac = j.total ? Math.min(1, j.progress / j.total) : DONE.has(j.state) ? 1 : 0;
    const barW = Math.max(10, Math.min(40, width - 27 - 15 - 36));
    const fill = Math.round(frac * barW);
    const bar = "|" + "+".repeat(fill) + " ".repeat(barW - fill) + "|";
    const sizes = j.total ? `${humanBytes(j.progress)}/${humanBytes(j.total)}` : "";
    const rate = !DONE.has(j.state) && j.rate > 0 && j.progress < j.total ? ` ${humanBytes(Math.round(j.rate))}/s` : "";
    return `${name} ${state} ${bar} ${sizes}${rate}`.slice(0, width - 1);
  }

  render(): void {
    if (!this.tty) return;
    const width = this.out.columns ?? 100;
    const lines = [...this.jobs.values()].sort((a, b) => a.order - b.order).map((j) => this.line(j, width));
    const secs = (Date.now() - this.started) / 1000;
    lines.push(`elapsed: ${secs.toFixed(1)} s  total: ${humanBytes(this.bytes)} (${humanBytes(Math.round(this.bytes / Math.max(secs, 0.001)))}/s)`);
    this.clear();
    this.out.write(lines.join("\n") + "\n");
    this.drawn = lines.length;
  }

  finish(): void {
    if (this.timer) clearInterval(this.timer);
    if (this.tty) this.render();
    else {
      const secs = (Date.now() - this.started) / 1000;
      this.out.write(`elapsed: ${secs.toFixed(1)} s  total: ${humanBytes(this.bytes)}\n`);
    }
  }
}

// ---- commands ----

function address(v: Values, argv: string[]): string {
  if (v.address) return v.address;
  if (process.env.CONTAINERD_ADDRESS) return process.env.CONTAINERD_ADDRESS;
  return loadConfig(v.config ?? configPathFromArgv(argv)).grpc.address;
}

function platforms(v: Values): Platform[] {
  if (v["all-platforms"]) return [];
  return v.platform?.length ? v.platform.map(parsePlatform) : [hostPlatform()];
}

function labels(v: Values): Record<string, string> {
  const out: Record<string, string> = {};
  for (const l of v.label ?? []) {
    const i = l.indexOf("=");
    if (i <= 0) throw new Error(`invalid label ${JSON.stringify(l)}: want KEY=VALUE`);
    out[l.slice(0, i)] = l.slice(i + 1);
  }
  return out;
}

function registryOptions(v: Values): RegistryOptions {
  const o: RegistryOptions = { defaultScheme: v["plain-http"] ? "http" : "", hostDir: v["hosts-dir"] ?? "", httpDebug: v["http-debug"] ? 1 : 0 };
  if (v["http-debug"]) o.logs = (c) => process.stderr.write(c);
  if (v.user) {
    const i = v.user.indexOf(":");
    const username = i >= 0 ? v.user.slice(0, i) : v.user;
    const secret = i >= 0 ? v.user.slice(i + 1) : process.env.FLOTILLA_REGISTRY_PASSWORD ?? "";
    const creds: RegistryCredentials = { type: "credentials", username, secret };
    o.credentials = async () => creds;
  }
  return o;
}

function unpacks(v: Values, ps: Platform[]): { platform: Platform; snapshotter: string }[] {
  if (v["no-unpack"]) return [];
  return (ps.length ? ps : [hostPlatform()]).slice(0, 1).map((platform) => ({ platform, snapshotter: v.snapshotter ?? "" }));
}

async function run(sub: string, v: Values, pos: string[], argv: string[]): Promise<number> {
  const channels = new ChannelPool();
  const client = new TransferClient(channels.get(address(v, argv)));
  const ctx = background(v.namespace ?? process.env.CONTAINERD_NAMESPACE ?? "default");
  const tty = !!(process.stdout as NodeJS.WriteStream).isTTY && !v.plain;
  const view = new ProgressView(sub === "export" && (pos[0] === "-" || !pos[0]) ? process.stderr : process.stdout, tty && !(sub === "export" && pos[0] === "-"));
  const progress = (p: ProgressEvent): void => view.update(p);
  const ac = new AbortController();
  const onSig = (): void => ac.abort();
  process.once("SIGINT", onSig);
  const c = { ...ctx, signal: ac.signal };
  try {
    switch (sub) {
      case "pull": {
        if (pos.length !== 1) throw new Error("pull: exactly one reference required");
        const ref = formatReference(normalizeReference(pos[0]!));
        const ps = platforms(v);
        await client.pull(c, ref, { platforms: ps, labels: labels(v), unpacks: unpacks(v, ps) }, registryOptions(v), { progress });
        break;
      }
      case "push": {
        if (pos.length < 1 || pos.length > 2) throw new Error("push: REF [LOCAL] required");
        const ref = formatReference(normalizeReference(pos[0]!));
        const local = pos[1] ?? ref;
        await client.push(c, local, ref, registryOptions(v), { platforms: v["all-platforms"] || !v.platform?.length ? [] : platforms(v) }, { progress });
        break;
      }
      case "import": {
        if (pos.length !== 1) throw new Error("import: one FILE (or - for stdin) required");
        const input = pos[0] === "-" ? process.stdin : fs.createReadStream(pos[0]!, { highWaterMark: 1 << 20 });
        const ps = platforms(v);
        const extra = v["base-name"] ? [{ name: v["base-name"], isPrefix: true }] : [];
        await client.importArchive(c, input, { name: v["index-name"] ?? "", labels: labels(v), platforms: ps, extraReferences: extra, unpacks: unpacks(v, ps) }, { forceCompress: !!v.compress }, { progress });
        break;
      }
      case "export": {
        if (pos.length < 2) throw new Error("export: OUT and at least one REF required");
        const [outPath, ...refs] = pos;
        const tmp = outPath === "-" ? undefined : `${outPath}.tmp-${process.pid}`;
        const out = tmp ? fs.createWriteStream(tmp) : process.stdout;
        try {
          await client.exportArchive(c, refs, out, {
            platforms: v["all-platforms"] ? [] : platforms(v), allPlatforms: !!v["all-platforms"], skipCompatibilityManifest: !!v["skip-manifest-json"],
          }, { progress });
          if (tmp) {
            await new Promise<void>((resolve, reject) => (out as fs.WriteStream).end((e?: Error | null) => (e ? reject(e) : resolve())));
            fs.renameSync(tmp, outPath!);
          }
        } catch (e) {
          if (tmp) {
            (out as fs.WriteStream).destroy();
            fs.rmSync(tmp, { force: true });
          }
          throw e;
        }
        break;
      }
      case "tag": {
        if (pos.length < 2) throw new Error("tag: SRC and DST required");
        const [src, ...dsts] = pos;
        for (const dst of dsts) {
          if (!v.force) {
            const { ImageStoreProxy } = await import("../libs/clients/images");
            const exists = await new ImageStoreProxy(channels.get(address(v, argv))).get(c, dst).then(() => true, () => false);
            if (exists) throw new Error(`image "${dst}": already exists`);
          }
          await client.tag(c, src!, dst);
          process.stdout.write(dst + "\n");
        }
        break;
      }
      default:
        process.stderr.write(`flotilla images: unknown command ${JSON.stringify(sub)}\n${USAGE}`);
        return 1;
    }
    view.finish();
    return 0;
  } catch (e) {
    view.finish();
    process.stderr.write(`flotilla images ${sub}: ${(e as Error).message}\n`);
    return 1;
  } finally {
    process.off("SIGINT", onSig);
    channels.close();
  }
}

/** Entry point for `flotilla images ...`. */
export async function imagesCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (!sub || sub === "help" || sub === "--help" || sub === "-h") {
    process.stdout.write(USAGE);
    return sub ? 0 : 1;
  }
  let parsed;
  try {
    parsed = parseArgs({ args: rest, options: OPTIONS, allowPositionals: true, strict: true });
  } catch (e) {
    process.stderr.write(`flotilla images ${sub}: ${(e as Error).message}\n`);
    return 1;
  }
  if (parsed.values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  return run(sub, parsed.values, parsed.positionals, rest);
}

export { formatPlatform };

