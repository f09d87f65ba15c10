/**
 * Test registries: Debian's docker-registry on a loopback port (anonymous, or htpasswd basic auth with
 * a bcrypt entry made here), and a small front proxy that demands Bearer tokens from its own token
 * endpoint and can inject faults (cut a blob body, answer 503, redirect blobs, serve garbage).
 */
import { spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as http from "node:http";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { randomBytes } from "node:crypto";
import { freePort } from "#cli/supervisor";

export { freePort };

async function waitPort(port: number, ms = 15000): Promise<void> {
  const until = Date.now() + ms;
  for (;;) {
    const ok = await new Promise<boolean>((r) => {
      const c = net.connect(port, "127.0.0.1", () => {
        c.destroy();
        r(true);
      });
      c.on("error", () => r(false));
    });
    if (ok) return;
    if (Date.now() > until) throw new Error(`port ${port} did not open`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export interface TestRegistry {
  /** host:port */
  host: string;
  port: number;
  dir: string;
  stop(): Promise<void>;
}

/** bcrypt hash for htpasswd (bcryptjs, a dev dependency). */
export function bcryptHash(password: string): string {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const bcrypt = require("bcryptjs") as { hashSync(p: string, rounds: number): string };
  return bcrypt.hashSync(password, 6);
}

export async function startRegistry(opts: { user?: string; password?: string } = {}): Promise<TestRegistry> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "flt-reg-"));
  const port = await freePort();
  const lines = [
    "version: 0.1",
    "log:",
    "  level: error",
    "  accesslog:",
    "    disabled: true",
    "storage:",
    "  filesystem:",
    `    rootdirectory: ${dir}/data`,
    "  delete:",
    "    enabled: true",
    "http:",
    `  addr: 127.0.0.1:${port}`,
  ];
  if (opts.user) {
    fs.writeFileSync(path.join(dir, "htpasswd"), `${opts.user}:${bcryptHash(opts.password ?? "")}\n`);
    lines.push("auth:", "  htpasswd:", "    realm: basic-realm", `    path: ${dir}/htpasswd`);
  }
  fs.writeFileSync(path.join(dir, "config.yml"), lines.join("\n") + "\n");
  const log = fs.openSync(path.join(dir, "registry.log"), "a");
  const child: ChildProcess = spawn("docker-registry", ["serve", path.join(dir, "config.yml")], { stdio: ["ignore", log, log] });
  fs.closeSync(log);
  await waitPort(port);
  return {
    host: `127.0.0.1:${port}`,
    port,
    dir,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((r) => child.once("exit", r));
        child.kill("SIGKILL");
        await exited;
      }
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface Faults {
  /** Cut the body of the next N blob GETs after this many bytes. */
  cutBlobAfter?: { bytes: number; times: number };
  /** Answer 503 to the next N requests. */
  unavailable?: number;
  /** Redirect blob GETs to /redirected/... on the same proxy. */
  redirectBlobs?: boolean;
  /** Replace blob bodies with this many random bytes (same length as asked). */
  garbageBlobs?: boolean;
  /** Like garbageBlobs, only for blobs longer than this many bytes (layers, not configs). */
  garbageBlobsOver?: number;
  /** Send blob bodies at about this many bytes per second. */
  throttleBlobs?: number;
}

export interface FrontProxy {
  host: string;
  port: number;
  faults: Faults;
  /** Requests seen, as "METHOD path". */
  log: string[];
  tokensIssued: number;
  stop(): Promise<void>;
}

/**
 * A proxy in front of `upstream` (host:port). With `bearer`, every /v2/ request needs a token from
 * /token (given with Basic `bearer.user:bearer.password`, or anonymously when `anonymousPull`).
 */
export async function startFrontProxy(upstream: string, opts: { bearer?: { user: string; password: string; anonymousPull?: boolean } } = {}): Promise<FrontProxy> {
  const port = await freePort();
  const tokens = new Map<string, { push: boolean }>();
  const state: FrontProxy = { host: `127.0.0.1:${port}`, port, faults: {}, log: [], tokensIssued: 0, stop: async () => undefined };
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? "/", `http://${state.host}`);
    state.log.push(`${req.method} ${url.pathname}${url.search}${req.headers.range ? ` range=${req.headers.range}` : ""}`);
    if (url.pathname === "/token") {
      const a = req.headers.authorization ?? "";
      const want = opts.bearer ? "Basic " + Buffer.from(`${opts.bearer.user}:${opts.bearer.password}`).toString("base64") : "";
      const scope = url.searchParams.getAll("scope").join(" ");
      const authed = a === want;
      if (!authed && !(opts.bearer?.anonymousPull && !scope.includes("push"))) {
        res.writeHead(401, { "content-type": "application/json" });
        res.end(JSON.stringify({ errors: [{ code: "UNAUTHORIZED" }] }));
        return;
      }
      const t = randomBytes(12).toString("hex");
      tokens.set(t, { push: authed });
      state.tokensIssued++;
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ token: t, expires_in: 300 }));
      return;
    }
    if (state.faults.unavailable && state.faults.unavailable > 0) {
      state.faults.unavailable--;
      res.writeHead(503, { "retry-after": "0" });
      res.end();
      return;
    }
    let target = url.pathname;
    if (target.startsWith("/redirected/")) target = target.slice("/redirected".length);
    else if (state.faults.redirectBlobs && req.method === "GET" && /\/blobs\/sha256:/.test(target)) {
      res.writeHead(307, { location: `http://${state.host}/redirected${target}` });
      res.end();
      return;
    }
    if (opts.bearer && target.startsWith("/v2/") && !url.pathname.startsWith("/redirected/")) {
      const a = req.headers.authorization ?? "";
      const tok = a.startsWith("Bearer ") ? tokens.get(a.slice(7)) : undefined;
      const repo = /^\/v2\/(.+?)\/(manifests|blobs|tags)\//.exec(target)?.[1] ?? "";
      const needPush = req.method !== "GET" && req.method !== "HEAD";
      if (!tok || (needPush && !tok.push)) {
        const scope = repo ? ` ,scope="repository:${repo}:${needPush ? "pull,push" : "pull"}"` : "";
        res.writeHead(401, { "www-authenticate": `Bearer realm="http://${state.host}/token",service="test-registry"${scope.replace(" ,", ",")}`, "content-type": "application/json" });
        res.end(JSON.stringify({ errors: [{ code: "UNAUTHORIZED" }] }));
        return;
      }
    }
    const up = http.request({ host: upstream.split(":")[0], port: Number(upstream.split(":")[1]), method: req.method, path: target + url.search, headers: { ...req.headers, host: upstream, authorization: "" } }, (ur) => {
      const headers = { ...ur.headers };
      if (headers.location) headers.location = headers.location.replace(`http://${upstream}`, `http://${state.host}`);
      const isBlobGet = req.method === "GET" && /\/blobs\/sha256:/.test(target) && ur.statusCode !== undefined && ur.statusCode < 300;
      res.writeHead(ur.statusCode ?? 502, headers);
      const length = Number(ur.headers["content-length"] ?? 0);
      if (isBlobGet && (state.faults.garbageBlobs || (state.faults.garbageBlobsOver !== undefined && length > state.faults.garbageBlobsOver))) {
        ur.resume();
        res.end(randomBytes(Number(ur.headers["content-length"] ?? 0)));
        return;
      }
      const cut = state.faults.cutBlobAfter;
      if (isBlobGet && cut && cut.times > 0) {
        cut.times--;
        let sent = 0;
        ur.on("data", (c: Buffer) => {
          if (sent >= cut.bytes) return;
          const part = c.subarray(0, cut.bytes - sent);
          sent += part.length;
          res.write(part);
          if (sent >= cut.bytes) {
            ur.destroy();
            res.socket?.destroy();
          }
        });
        return;
      }
      const rate = state.faults.throttleBlobs;
      if (isBlobGet && rate) {
        ur.on("data", (c: Buffer) => {
          ur.pause();
          res.write(c);
          setTimeout(() => ur.resume(), (c.length / rate) * 1000);
        });
        ur.on("end", () => res.end());
        res.on("close", () => ur.destroy());
        return;
      }
      ur.pipe(res);
    });
    up.on("error", () => {
      res.writeHead(502);
      res.end();
    });
    req.pipe(up);
  });
  await new Promise<void>((r) => server.listen(port, "127.0.0.1", r));
  state.stop = () => new Promise((r) => {
    server.closeAllConnections();
    server.close(() => r());
  });
  return state;
}
