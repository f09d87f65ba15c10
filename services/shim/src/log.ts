/**
 * The shim's logger: JSON lines on the bundle's `log` FIFO, which the tasks process reads and copies
 * into its own log. Writes never block and never fail the shim: while nobody reads the FIFO (the tasks
 * process is restarting) lines are dropped.
 */
import * as fs from "node:fs";

export type Level = "debug" | "info" | "warn" | "error";

export interface ShimLogger {
  /** Write to another file from now on (a warm shim adopting a bundle; none: a shim back in the pool), with more base fields. */
  retarget(file: string | undefined, base: Record<string, unknown>): void;
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

const ORDER: Record<Level, number> = { debug: 0, info: 1, warn: 2, error: 3 };

export function openLog(file: string | undefined, level: Level, base: Record<string, unknown>): ShimLogger {
  let fd = -1;
  const open = (f: string | undefined): void => {
    if (fd >= 0) {
      try {
        fs.closeSync(fd);
      } catch {
        /* closed */
      }
    }
    fd = -1;
    if (!f) return;
    try {
      fd = fs.openSync(f, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
    } catch {
      fd = -1;
    }
  };
  open(file);
  const write = (lvl: Level, msg: string, fields?: Record<string, unknown>): void => {
    if (fd < 0 || ORDER[lvl] < ORDER[level]) return;
    const rec: Record<string, unknown> = { time: new Date().toISOString(), level: lvl, msg, ...base };
    for (const [k, v] of Object.entries(fields ?? {})) rec[k] = v instanceof Error ? v.message : v;
    try {
      fs.writeSync(fd, JSON.stringify(rec) + "\n");
    } catch {
      /* no reader, or the FIFO is full: drop */
    }
  };
  return {
    retarget: (f, more) => {
      Object.assign(base, more);
      open(f);
    },
    debug: (m, f) => write("debug", m, f),
    info: (m, f) => write("info", m, f),
    warn: (m, f) => write("warn", m, f),
    error: (m, f) => write("error", m, f),
  };
}
