/**
 * `bin/flotilla`, as users run it, for the tests: a run with its output collected and a timeout that
 * fails a command which does not exit (SIGKILL, code -1 and a note on stderr), or the child itself.
 */
import { spawn, type ChildProcess, type StdioOptions } from "node:child_process";
import * as path from "node:path";
import { repoRoot } from "#libs/proto";

export const FLOTILLA = path.join(repoRoot(), "bin", "flotilla");

export interface FlotillaResult {
  code: number;
  stdout: string;
  stderr: string;
  ms: number;
}

export interface FlotillaOptions {
  env?: NodeJS.ProcessEnv;
  /** Kill after this long (default 60 s): a command that hangs fails instead of blocking the suite. */
  timeoutMs?: number;
}

/** Start `bin/flotilla ARGS` (stdio as given). */
export function spawnFlotilla(args: string[], opts: { env?: NodeJS.ProcessEnv; stdio?: StdioOptions } = {}): ChildProcess {
  return spawn(process.execPath, [FLOTILLA, ...args], { env: { ...process.env, ...opts.env }, stdio: opts.stdio ?? ["ignore", "pipe", "pipe"] });
}

/** Run `bin/flotilla ARGS` to its end. */
export function flotilla(args: string[], opts: FlotillaOptions = {}): Promise<FlotillaResult> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const c = spawnFlotilla(args, opts);
    let stdout = "";
    let stderr = "";
    let killed = false;
    c.stdout!.on("data", (b: Buffer) => (stdout += b));
    c.stderr!.on("data", (b: Buffer) => (stderr += b));
    const timeoutMs = opts.timeoutMs ?? 60_000;
    const t = setTimeout(() => {
      killed = true;
      c.kill("SIGKILL");
    }, timeoutMs);
    c.on("error", reject);
    c.on("close", (code) => {
      clearTimeout(t);
      if (killed) stderr += `\n[bin/flotilla ${args.join(" ")} did not exit within ${timeoutMs} ms]`;
      resolve({ code: killed ? -1 : code ?? 1, stdout, stderr, ms: Date.now() - started });
    });
  });
}

/** Run `bin/flotilla ARGS` and exit with 0 or fail with its output. */
export async function flotillaOk(args: string[], opts: FlotillaOptions = {}): Promise<FlotillaResult> {
  const r = await flotilla(args, opts);
  if (r.code !== 0) throw new Error(`bin/flotilla ${args.join(" ")} exited ${r.code}\n${r.stdout}\n${r.stderr}`);
  return r;
}
