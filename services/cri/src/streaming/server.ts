/**
 * The streaming server: plain HTTP on `stream_server_address:stream_server_port` ("0" = any free
 * port; the URLs then name the port actually bound). Exec, Attach and PortForward RPCs park their
 * request in the token cache and answer `http://ADDR:PORT/{exec,attach,portforward}/TOKEN`; the
 * client's upgrade request on that URL (GET or POST) takes the token and gets the stream.
 */
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import type { Duplex } from "node:stream";
import { errInvalidArgument } from "#libs/errdefs";
import { RequestCache } from "./cache";
import { servePortForward } from "./portforward";
import { serveRemoteCommand, type CommandIO, type Timeouts } from "./remotecommand";
import { writeHttpError } from "./upgrade";

export interface ExecRequest {
  containerId: string;
  cmd: string[];
  tty: boolean;
  stdin: boolean;
  stdout: boolean;
  stderr: boolean;
}
export type AttachRequest = Omit<ExecRequest, "cmd">;
export interface PortForwardRequest {
  podSandboxId: string;
  ports: number[];
}

/** What the server runs once a client is connected. */
export interface StreamRuntime {
  /** Run the command; throws ExitCodeError for a non-zero exit. */
  exec(req: ExecRequest, io: CommandIO): Promise<void>;
  attach(req: AttachRequest, io: CommandIO): Promise<void>;
  /** Join `data` to `port` in the pod; resolves when the connection is over. */
  portForward(podSandboxId: string, port: number, data: Duplex): Promise<void>;
}

export interface StreamServerOptions extends Timeouts {
  address: string;
  port: string;
}

type Parked = { kind: "exec"; req: ExecRequest } | { kind: "attach"; req: AttachRequest } | { kind: "portforward"; req: PortForwardRequest };

function validateStreams(r: { containerId: string; tty: boolean; stdin: boolean; stdout: boolean; stderr: boolean }): void {
  if (!r.containerId) throw errInvalidArgument("missing required container_id");
  if (r.tty && r.stderr) throw errInvalidArgument("tty and stderr cannot both be true");
  if (!r.stdin && !r.stdout && !r.stderr) throw errInvalidArgument("one of stdin, stdout, or stderr must be set");
}

export class StreamServer {
  private readonly cache = new RequestCache<Parked>();
  private server?: http.Server;
  private base = "";
  private readonly sockets = new Set<Duplex>();

  constructor(private readonly opts: StreamServerOptions, private readonly runtime: StreamRuntime) {}

  /** `http://host:port`, known once started. */
  get baseUrl(): string {
    return this.base;
  }

  async start(): Promise<void> {
    const server = http.createServer((req, res) => {
      const parked = this.take(req.url ?? "");
      if (!parked) {
        res.writeHead(404, { "Content-Type": "text/plain; charset=utf-8" }).end("404 page not found\n");
        return;
      }
      res.writeHead(400, { "Content-Type": "text/plain; charset=utf-8" }).end("unable to upgrade: missing upgrade headers in request\n");
    });
    server.on("upgrade", (req: http.IncomingMessage, socket: Duplex, head: Buffer) => this.onUpgrade(req, socket, head));
    server.on("connection", (s: Duplex) => {
      this.sockets.add(s);
      s.once("close", () => this.sockets.delete(s));
    });
    const host = this.opts.address || "127.0.0.1";
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(Number(this.opts.port || 0), host, () => resolve());
    });
    const a = server.address() as AddressInfo;
    this.base = `http://${a.family === "IPv6" ? `[${a.address}]` : a.address}:${a.port}`;
    this.server = server;
  }

  async stop(): Promise<void> {
    const s = this.server;
    this.server = undefined;
    if (!s) return;
    for (const sock of this.sockets) sock.destroy();
    await new Promise<void>((res) => s.close(() => res()));
  }

  getExec(req: ExecRequest): string {
    validateStreams(req);
    if (!req.cmd.length) throw errInvalidArgument("missing required cmd");
    return this.url("exec", { kind: "exec", req });
  }

  getAttach(req: AttachRequest): string {
    validateStreams(req);
    return this.url("attach", { kind: "attach", req });
  }

  getPortForward(req: PortForwardRequest): string {
    if (!req.podSandboxId) throw errInvalidArgument("missing required pod_sandbox_id");
    return this.url("portforward", { kind: "portforward", req });
  }

  private url(kind: string, p: Parked): string {
    return `${this.base}/${kind}/${this.cache.insert(p)}`;
  }

  /** The parked request a path names (consumed), or undefined. */
  private take(url: string): Parked | undefined {
    const m = /^\/(exec|attach|portforward)\/([A-Za-z0-9_-]+)(?:\?.*)?$/.exec(url);
    if (!m) return undefined;
    const p = this.cache.consume(m[2]!);
    return p?.kind === m[1] ? p : undefined;
  }

  private onUpgrade(req: http.IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on("error", () => undefined);
    const p = this.take(req.url ?? "");
    if (!p) {
      writeHttpError(socket, 404, "404 page not found");
      return;
    }
    const t: Timeouts = { streamCreationMs: this.opts.streamCreationMs, idleMs: this.opts.idleMs };
    switch (p.kind) {
      case "exec":
        serveRemoteCommand(req, socket, head, p.req, (io) => this.runtime.exec(p.req, io), t);
        return;
      case "attach":
        serveRemoteCommand(req, socket, head, p.req, (io) => this.runtime.attach(p.req, io), t);
        return;
      case "portforward":
        servePortForward(req, socket, head, p.req.podSandboxId, (port, data) => this.runtime.portForward(p.req.podSandboxId, port, data), t);
        return;
    }
  }
}
