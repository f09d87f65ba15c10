/**
 * The OCI runtime CLI (runc, or crun, which takes the same commands): create/start/exec detached with
 * pid files, kill, delete, pause/resume, ps, update, checkpoint. Failures carry the runtime's own last
 * error message from its JSON log, as containerd reports them ("OCI runtime create failed: ...").
 */
import { spawn, type StdioOptions } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { classError } from "#libs/ttrpc/errors";
import type { Reaper } from "./reaper";

export interface RuncOptions {
  binary: string;
  root: string;
  /** JSON log file (`<bundle>/log.json`). */
  log: string;
  systemdCgroup?: boolean;
  /** Global options placed before the command (from the runtime's configuration). */
  extraArgs?: string[];
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export class RuncError extends Error {
  constructor(message: string, readonly result: RunResult) {
    super(message);
    this.name = "RuncError";
  }
}

/** Wraps each runtime invocation (set by src/tracing.ts when the shim exports spans). */
type RunWrapper = (binary: string, args: string[], run: () => Promise<RunResult>) => Promise<RunResult>;
let wrapRun: RunWrapper | undefined;

export function traceRuntime(wrap: RunWrapper | undefined): void {
  wrapRun = wrap;
}

export class Runc {
  constructor(readonly opts: RuncOptions, private readonly reaper?: Reaper) {}

  /** The runtime's state directory of container `id` (`<root>/<id>`). */
  stateDir(id: string): string {
    return path.join(this.opts.root, id);
  }

  private globalArgs(): string[] {
    const a = [...(this.opts.extraArgs ?? []), "--root", this.opts.root, "--log", this.opts.log, "--log-format", "json"];
    if (this.opts.systemdCgroup) a.push("--systemd-cgroup");
    return a;
  }

  /** Run the runtime; resolves with its exit code and output (stdout/stderr captured unless `stdio` is given). */
  run(args: string[], opts: { stdio?: StdioOptions; input?: string; cwd?: string } = {}): Promise<RunResult> {
    return wrapRun ? wrapRun(this.opts.binary, args, () => this.spawn(args, opts)) : this.spawn(args, opts);
  }

  private spawn(args: string[], opts: { stdio?: StdioOptions; input?: string; cwd?: string }): Promise<RunResult> {
    return new Promise((resolve, reject) => {
      const capture = !opts.stdio;
      const child = spawn(this.opts.binary, [...this.globalArgs(), ...args], {
        stdio: opts.stdio ?? [opts.input !== undefined ? "pipe" : "ignore", "pipe", "pipe"],
        cwd: opts.cwd,
      });
      if (child.pid) this.reaper?.spawned.add(child.pid);
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      if (capture) {
        child.stdout!.on("data", (b: Buffer) => out.push(b));
        child.stderr!.on("data", (b: Buffer) => err.push(b));
      }
      if (opts.input !== undefined && child.stdin) {
        child.stdin.on("error", () => undefined);
        child.stdin.end(opts.input);
      }
      child.on("error", (e) => {
        if (child.pid) this.reaper?.spawned.delete(child.pid);
        reject(classError("not found", `OCI runtime ${JSON.stringify(this.opts.binary)}: ${e.message}`));
      });
      child.on("close", (code, signal) => {
        if (child.pid) this.reaper?.spawned.delete(child.pid);
        resolve({ code: code ?? (signal ? 128 : 1), stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() });
      });
    });
  }

  /** The runtime's last error: from its JSON log, else its stderr. */
  lastError(r: RunResult): string {
    try {
      const lines = fs.readFileSync(this.opts.log, "utf8").trim().split("\n").reverse();
      for (const l of lines) {
        try {
          const j = JSON.parse(l) as { level?: string; msg?: string };
          if ((j.level === "error" || j.level === "fatal") && j.msg) return j.msg;
        } catch {
          /* not JSON */
        }
      }
    } catch {
      /* no log */
    }
    return (r.stderr.trim().split("\n").pop() ?? "").trim() || `exit status ${r.code}`;
  }

  private async check(what: string, p: Promise<RunResult>): Promise<RunResult> {
    const r = await p;
    if (r.code !== 0) throw new RuncError(`${what}: ${this.lastError(r)}`, r);
    return r;
  }

  create(id: string, bundle: string, o: { pidFile: string; consoleSocket?: string; noPivot?: boolean; noNewKeyring?: boolean; stdio: StdioOptions }): Promise<RunResult> {
    const args = ["create", "--bundle", bundle, "--pid-file", o.pidFile];
    if (o.consoleSocket) args.push("--console-socket", o.consoleSocket);
    if (o.noPivot) args.push("--no-pivot");
    if (o.noNewKeyring) args.push("--no-new-keyring");
    args.push(id);
    return this.check("OCI runtime create failed", this.run(args, { stdio: o.stdio, cwd: bundle }));
  }

  start(id: string): Promise<RunResult> {
    return this.check("OCI runtime start failed", this.run(["start", id]));
  }

  exec(id: string, processFile: string, o: { pidFile: string; consoleSocket?: string; stdio: StdioOptions }): Promise<RunResult> {
    const args = ["exec", "--detach", "--process", processFile, "--pid-file", o.pidFile];
    if (o.consoleSocket) args.push("--console-socket", o.consoleSocket);
    args.push(id);
    return this.check("OCI runtime exec failed", this.run(args, { stdio: o.stdio }));
  }

  kill(id: string, signal: number, all: boolean): Promise<RunResult> {
    const args = ["kill"];
    if (all) args.push("--all");
    args.push(id, String(signal));
    return this.check("OCI runtime kill failed", this.run(args));
  }

  delete(id: string, force: boolean): Promise<RunResult> {
    return this.check("OCI runtime delete failed", this.run(force ? ["delete", "--force", id] : ["delete", id]));
  }

  pause(id: string): Promise<RunResult> {
    return this.check("OCI runtime pause failed", this.run(["pause", id]));
  }

  resume(id: string): Promise<RunResult> {
    return this.check("OCI runtime resume failed", this.run(["resume", id]));
  }

  async ps(id: string): Promise<number[]> {
    const r = await this.check("OCI runtime ps failed", this.run(["ps", "--format", "json", id]));
    const v = JSON.parse(r.stdout.trim() || "[]") as number[] | null;
    return v ?? [];
  }

  update(id: string, resourcesJson: string): Promise<RunResult> {
    return this.check("OCI runtime update failed", this.run(["update", "--resources", "-", id], { input: resourcesJson }));
  }

  checkpoint(id: string, o: { imagePath: string; workPath?: string; parentPath?: string; exit?: boolean; tcp?: boolean; unixSockets?: boolean; terminal?: boolean; fileLocks?: boolean; emptyNs?: string[] }): Promise<RunResult> {
    const args = ["checkpoint", "--image-path", o.imagePath];
    if (o.workPath) args.push("--work-path", o.workPath);
    if (o.parentPath) args.push("--parent-path", o.parentPath);
    if (!o.exit) args.push("--leave-running");
    if (o.tcp) args.push("--tcp-established");
    if (o.unixSockets) args.push("--ext-unix-sk");
    if (o.terminal) args.push("--shell-job");
    if (o.fileLocks) args.push("--file-locks");
    for (const ns of o.emptyNs ?? []) args.push("--empty-ns", ns);
    args.push(id);
    return this.check("OCI runtime checkpoint failed", this.run(args));
  }
}

/** containerd's checkKillError: map a runtime kill failure to an errdefs class. */
export function killError(err: unknown): Error {
  const msg = err instanceof Error ? err.message : String(err);
  const low = msg.toLowerCase();
  if (low.includes("os: process already finished") || low.includes("container not running") || low.includes("no such process") || low.includes("esrch")) {
    return classError("not found", "process already finished");
  }
  if (msg.includes("does not exist")) return classError("not found", "no such container");
  return classError("unknown", `unknown error after kill: ${msg}`);
}
