/**
 * A real OCI registry for tests: Debian's `docker-registry` (/usr/bin/docker-registry) on
 * 127.0.0.1:<free port> with temporary storage, plus the push side of the distribution HTTP API
 * (monolithic blob upload, manifest put) so tests can publish images they build themselves.
 *
 *   const reg = await startRegistry();
 *   await pushImage(reg, "test/busybox", "latest", await buildBusyboxImage());
 *   ... ctr content fetch --plain-http `${reg.host}/test/busybox:latest` ...
 *   await reg.stop();
 *
 * The registry process is stopped by PID and its directory removed by `stop()`.
 */
import { spawn, type ChildProcess } from "node:child_process";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as http from "node:http";
import * as os from "node:os";
import * as path from "node:path";
import { freePort } from "#cli/supervisor";

export const REGISTRY_BINARY = "/usr/bin/docker-registry";

export interface Registry {
  /** `127.0.0.1:<port>`, as used in image references. */
  host: string;
  port: number;
  /** `http://127.0.0.1:<port>` */
  url: string;
  dir: string;
  pid: number;
  stop(): Promise<void>;
}

export interface HttpResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

/** One HTTP request to the registry. */
export function request(url: string, opts: { method?: string; headers?: Record<string, string>; body?: Buffer } = {}): Promise<HttpResponse> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: opts.method ?? "GET", headers: { ...opts.headers, ...(opts.body ? { "content-length": String(opts.body.length) } : {}) } }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end(opts.body);
  });
}

export async function startRegistry(): Promise<Registry> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "flt-registry-"));
  const port = await freePort();
  const config = path.join(dir, "config.yml");
  fs.writeFileSync(config, [
    "version: 0.1",
    "log:",
    "  level: warn",
    "  accesslog:",
    "    disabled: true",
    "storage:",
    "  filesystem:",
    `    rootdirectory: ${path.join(dir, "storage")}`,
    "  delete:",
    "    enabled: true",
    "http:",
    `  addr: 127.0.0.1:${port}`,
    "",
  ].join("\n"));
  const log = fs.openSync(path.join(dir, "registry.log"), "a");
  const child: ChildProcess = spawn(REGISTRY_BINARY, ["serve", config], { stdio: ["ignore", log, log] });
  fs.closeSync(log);
  const url = `http://127.0.0.1:${port}`;
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise<void>((r) => child.once("exit", () => r()));
      process.kill(child.pid!, "SIGTERM");
      const t = setTimeout(() => child.exitCode === null && process.kill(child.pid!, "SIGKILL"), 5000);
      await exited;
      clearTimeout(t);
    }
    fs.rmSync(dir, { recursive: true, force: true });
  };
  const until = Date.now() + 15000;
  for (;;) {
    if (child.exitCode !== null) {
      const text = fs.readFileSync(path.join(dir, "registry.log"), "utf8");
      await stop();
      throw new Error(`docker-registry exited: ${text.slice(-2000)}`);
    }
    try {
      if ((await request(`${url}/v2/`)).status === 200) break;
    } catch {
      /* not listening yet */
    }
    if (Date.now() > until) {
      await stop();
      throw new Error("docker-registry did not answer /v2/ in time");
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return { host: `127.0.0.1:${port}`, port, url, dir, pid: child.pid!, stop };
}

export const sha256 = (b: Uint8Array): string => "sha256:" + crypto.createHash("sha256").update(b).digest("hex");

/** Upload a blob (monolithic: POST an upload session, PUT the bytes with the digest). Returns its digest. */
export async function pushBlob(reg: Registry, repo: string, data: Buffer): Promise<string> {
  const digest = sha256(data);
  if ((await request(`${reg.url}/v2/${repo}/blobs/${digest}`, { method: "HEAD" })).status === 200) return digest;
  const start = await request(`${reg.url}/v2/${repo}/blobs/uploads/`, { method: "POST" });
  if (start.status !== 202) throw new Error(`starting upload of ${digest}: HTTP ${start.status} ${start.body.toString()}`);
  const loc = new URL(String(start.headers.location), reg.url);
  loc.searchParams.set("digest", digest);
  const put = await request(loc.toString(), { method: "PUT", headers: { "content-type": "application/octet-stream" }, body: data });
  if (put.status !== 201) throw new Error(`uploading ${digest}: HTTP ${put.status} ${put.body.toString()}`);
  return digest;
}

/** Put a manifest or index under `reference` (a tag or its digest). Returns its digest. */
export async function pushManifest(reg: Registry, repo: string, reference: string, mediaType: string, body: Buffer): Promise<string> {
  const res = await request(`${reg.url}/v2/${repo}/manifests/${reference}`, { method: "PUT", headers: { "content-type": mediaType }, body });
  if (res.status !== 201) throw new Error(`putting manifest ${repo}:${reference}: HTTP ${res.status} ${res.body.toString()}`);
  return sha256(body);
}
