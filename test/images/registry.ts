/**
 * Test images for the images tests: a docker-registry on loopback, and OCI images built from
 * busybox-static (an index -> manifest -> config + gzip layers) pushed to it over the registry API.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as http from "node:http";
import * as os from "node:os";
import * as path from "node:path";
import * as zlib from "node:zlib";
import { freePort } from "#cli/supervisor";
import { waitFor } from "../harness";

export const MT = {
  index: "application/vnd.oci.image.index.v1+json",
  manifest: "application/vnd.oci.image.manifest.v1+json",
  config: "application/vnd.oci.image.config.v1+json",
  layer: "application/vnd.oci.image.layer.v1.tar+gzip",
} as const;

const sha = (b: Buffer): string => "sha256:" + crypto.createHash("sha256").update(b).digest("hex");

export interface Registry {
  host: string;
  dir: string;
  push(repo: string, tag: string, img: BuiltImage): Promise<void>;
  stop(): Promise<void>;
}

function request(method: string, url: string, body?: Buffer, headers: Record<string, string> = {}): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers: { ...headers, ...(body ? { "content-length": String(body.length) } : {}) } }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
    });
    req.on("error", reject);
    req.end(body);
  });
}

export async function startRegistry(): Promise<Registry> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "flt-registry-"));
  const port = await freePort();
  const host = `127.0.0.1:${port}`;
  fs.writeFileSync(path.join(dir, "config.yml"), [
    "version: 0.1",
    "log:", "  level: error", "  accesslog:", "    disabled: true",
    "storage:", "  filesystem:", `    rootdirectory: ${dir}/data`, "  delete:", "    enabled: true",
    "http:", `  addr: ${host}`,
  ].join("\n") + "\n");
  const child: ChildProcess = spawn("docker-registry", ["serve", path.join(dir, "config.yml")], { stdio: "ignore" });
  await waitFor("the registry", async () => ((await request("GET", `http://${host}/v2/`)).status === 200 ? true : undefined), 15000, 100);
  const putBlob = async (repo: string, data: Buffer): Promise<void> => {
    const d = sha(data);
    if ((await request("HEAD", `http://${host}/v2/${repo}/blobs/${d}`)).status === 200) return;
    const start = await request("POST", `http://${host}/v2/${repo}/blobs/uploads/`);
    if (start.status !== 202) throw new Error(`blob upload start: ${start.status} ${start.body.toString()}`);
    const loc = new URL(String(start.headers.location), `http://${host}`);
    loc.searchParams.set("digest", d);
    const put = await request("PUT", loc.toString(), data, { "content-type": "application/octet-stream" });
    if (put.status !== 201) throw new Error(`blob upload: ${put.status} ${put.body.toString()}`);
  };
  return {
    host,
    dir,
    async push(repo, tag, img) {
      for (const b of img.blobs.values()) await putBlob(repo, b.data);
      for (const m of img.manifests) {
        const r = await request("PUT", `http://${host}/v2/${repo}/manifests/${m.digest}`, m.data, { "content-type": m.mediaType });
        if (r.status !== 201) throw new Error(`manifest push: ${r.status} ${r.body.toString()}`);
      }
      const r = await request("PUT", `http://${host}/v2/${repo}/manifests/${tag}`, img.root.data, { "content-type": img.root.mediaType });
      if (r.status !== 201) throw new Error(`tag push: ${r.status} ${r.body.toString()}`);
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((r) => child.once("exit", r));
        child.kill("SIGKILL");
        await exited;
      }
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface Blob {
  digest: string;
  mediaType: string;
  data: Buffer;
}

export interface BuiltImage {
  root: Blob;
  /** Manifests referenced by the index (pushed by digest first). */
  manifests: Blob[];
  /** Config and layers, by digest. */
  blobs: Map<string, Blob>;
  /** The host platform's manifest, config, layer digests and diff ids. */
  manifest: Blob;
  config: Blob;
  layers: Blob[];
  diffIds: string[];
}

/** A gzip'ed tar of `dir` (GNU tar, sorted, zero mtimes and owners: reproducible). */
function tarGz(dir: string): { gz: Buffer; tar: Buffer } {
  const r = spawnSync("tar", ["-C", dir, "--sort=name", "--mtime=@0", "--owner=0", "--group=0", "--numeric-owner", "-cf", "-", "."], { maxBuffer: 1 << 30 });
  if (r.status !== 0) throw new Error(`tar: ${r.stderr.toString()}`);
  return { tar: r.stdout, gz: zlib.gzipSync(r.stdout, { level: 1 }) };
}

export interface BuildOptions {
  /** Extra layers of random bytes (each `size` bytes in `files` files). */
  extraLayers?: { size: number; files?: number }[];
  /** Add an arm64 manifest to the index too (never pulled on amd64). */
  otherPlatform?: boolean;
  /** Written into /etc/flotilla-tag, so images built with different tags differ. */
  tag?: string;
}

/** busybox-static as an OCI image: layer 0 = /bin/busybox + applet links, layer 1 = /etc, then extras. */
export function buildBusyboxImage(opts: BuildOptions = {}): BuiltImage {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), "flt-img-"));
  try {
    const layerDirs: string[] = [];
    const l0 = path.join(work, "l0");
    fs.mkdirSync(path.join(l0, "bin"), { recursive: true });
    fs.copyFileSync("/bin/busybox", path.join(l0, "bin", "busybox"));
    fs.chmodSync(path.join(l0, "bin", "busybox"), 0o755);
    for (const a of ["sh", "ls", "cat", "echo", "true", "sleep", "id"]) fs.symlinkSync("busybox", path.join(l0, "bin", a));
    layerDirs.push(l0);
    const l1 = path.join(work, "l1");
    fs.mkdirSync(path.join(l1, "etc"), { recursive: true });
    fs.writeFileSync(path.join(l1, "etc", "passwd"), "root:x:0:0:root:/root:/bin/sh\n");
    fs.writeFileSync(path.join(l1, "etc", "group"), "root:x:0:\n");
    fs.writeFileSync(path.join(l1, "etc", "flotilla-tag"), `${opts.tag ?? "base"}\n`);
    layerDirs.push(l1);
    (opts.extraLayers ?? []).forEach((x, i) => {
      const d = path.join(work, `x${i}`);
      fs.mkdirSync(path.join(d, "data", String(i)), { recursive: true });
      const files = x.files ?? 1;
      for (let f = 0; f < files; f++) fs.writeFileSync(path.join(d, "data", String(i), `f${f}`), crypto.randomBytes(Math.max(1, Math.floor(x.size / files))));
      layerDirs.push(d);
    });
    const layers: Blob[] = [];
    const diffIds: string[] = [];
    for (const d of layerDirs) {
      const { gz, tar } = tarGz(d);
      layers.push({ digest: sha(gz), mediaType: MT.layer, data: gz });
      diffIds.push(sha(tar));
    }
    const cfg = Buffer.from(JSON.stringify({
      created: "2024-01-01T00:00:00Z",
      architecture: "amd64",
      os: "linux",
      config: { Cmd: ["/bin/sh"], Env: ["PATH=/bin"] },
      rootfs: { type: "layers", diff_ids: diffIds },
      history: diffIds.map(() => ({ created: "2024-01-01T00:00:00Z", created_by: "flotilla test" })),
    }));
    const config: Blob = { digest: sha(cfg), mediaType: MT.config, data: cfg };
    const desc = (b: Blob): Record<string, unknown> => ({ mediaType: b.mediaType, digest: b.digest, size: b.data.length });
    const man = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MT.manifest, config: desc(config), layers: layers.map(desc) }));
    const manifest: Blob = { digest: sha(man), mediaType: MT.manifest, data: man };
    const manifests = [manifest];
    const platforms = [{ architecture: "amd64", os: "linux" }];
    if (opts.otherPlatform) {
      const other = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MT.manifest, config: desc(config), layers: [desc(layers[0]!)], annotations: { "flotilla.test/platform": "arm64" } }));
      manifests.push({ digest: sha(other), mediaType: MT.manifest, data: other });
      platforms.push({ architecture: "arm64", os: "linux" });
    }
    const idx = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MT.index, manifests: manifests.map((m, i) => ({ ...desc(m), platform: platforms[i] })) }));
    const root: Blob = { digest: sha(idx), mediaType: MT.index, data: idx };
    const blobs = new Map<string, Blob>();
    for (const b of [config, ...layers]) blobs.set(b.digest, b);
    return { root, manifests, blobs, manifest, config, layers, diffIds };
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}
