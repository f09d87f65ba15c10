/** Structured logging with pino: one JSON line per record on stderr, `service` on every line. */
import pino, { type Logger } from "pino";

export type { Logger };

const LEVELS = new Set(["trace", "debug", "info", "warn", "error", "fatal", "silent"]);

export function createLogger(service: string, level = "info"): Logger {
  const lvl = level === "warning" ? "warn" : level === "panic" ? "fatal" : level;
  return pino(
    { base: { service, pid: process.pid }, level: LEVELS.has(lvl) ? lvl : "info", timestamp: pino.stdTimeFunctions.isoTime },
    pino.destination({ fd: 2, sync: true }),
  );
}
