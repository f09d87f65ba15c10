/**
 * Errors across ttrpc, without loading grpc-js: a status code table shared with libs/errdefs (the same
 * class strings, checked by test/tasks/ttrpc.test.ts), so an error from a shim arrives in the tasks
 * process as an ordinary errdefs class (`errorCode(e)` reads its `code`), and a native error thrown by a
 * handler goes out with containerd's status code.
 */
import { Code, type Status } from "./wire";

/** errdefs class strings (libs/errdefs ErrorCodes) by gRPC code. */
const CLASS_BY_CODE: Record<number, string> = {
  [Code.Canceled]: "context canceled",
  [Code.Unknown]: "unknown",
  [Code.InvalidArgument]: "invalid argument",
  [Code.DeadlineExceeded]: "context deadline exceeded",
  [Code.NotFound]: "not found",
  [Code.AlreadyExists]: "already exists",
  [Code.PermissionDenied]: "permission denied",
  [Code.ResourceExhausted]: "resource exhausted",
  [Code.FailedPrecondition]: "failed precondition",
  [Code.Aborted]: "aborted",
  [Code.OutOfRange]: "out of range",
  [Code.Unimplemented]: "not implemented",
  [Code.Internal]: "internal",
  [Code.Unavailable]: "unavailable",
  [Code.DataLoss]: "data loss",
  [Code.Unauthenticated]: "unauthenticated",
};

const CODE_BY_CLASS: Record<string, number> = {
  ...Object.fromEntries(Object.entries(CLASS_BY_CODE).map(([c, s]) => [s, Number(c)])),
  conflict: Code.FailedPrecondition,
  "not modified": Code.FailedPrecondition,
};

export type ErrorClass = (typeof CLASS_BY_CODE)[number] | "conflict" | "not modified";

/** An error carrying an errdefs class in `code` (so errdefs.errorCode recognises it). */
export class TtrpcError extends Error {
  readonly code: string;
  constructor(cls: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "TtrpcError";
    this.code = cls;
  }
}

/** `<context>: <class>`, as containerd's wrapped errors read. */
export function classError(cls: ErrorClass, context?: string, options?: { cause?: unknown }): TtrpcError {
  return new TtrpcError(cls, context ? (cls === "unknown" ? context : `${context}: ${cls}`) : cls, options);
}

/** The connection to the peer is gone (containerd's ttrpc.ErrClosed). */
export const CLOSED_MESSAGE = "ttrpc: closed";
export function closedError(): TtrpcError {
  return new TtrpcError("unavailable", `${CLOSED_MESSAGE}: unavailable`);
}
export function isClosedError(e: unknown): boolean {
  return !!e && typeof e === "object" && (e as { code?: unknown }).code === "unavailable" && String((e as Error).message).startsWith(CLOSED_MESSAGE);
}

/** A non-OK status received from the peer, as a native error class. */
export function errorFromStatus(s: Status): TtrpcError {
  const code = s.code;
  let cls = CLASS_BY_CODE[code] ?? "unknown";
  const msg = s.message;
  if (code === Code.FailedPrecondition) {
    if (msg.endsWith(": conflict")) cls = "conflict";
    else if (msg.endsWith(": not modified")) cls = "not modified";
  }
  const message = cls === "unknown" || msg.endsWith(`: ${cls}`) || msg === cls ? msg : `${msg}: ${cls}`;
  return new TtrpcError(cls, message);
}

/** The status a handler's error goes out with. gRPC-shaped errors (numeric code + details) pass through. */
export function statusFromError(err: unknown): Status {
  if (err && typeof err === "object") {
    const e = err as { code?: unknown; details?: unknown; message?: unknown };
    if (typeof e.code === "number" && typeof e.details === "string") return { code: e.code, message: e.details, details: [] };
    if (typeof e.code === "string" && e.code in CODE_BY_CLASS) return { code: CODE_BY_CLASS[e.code]!, message: String(e.message ?? e.code), details: [] };
    // Plain system errors, as Go's ttrpc convertCode maps them.
    const sys: Record<string, number> = { ENOENT: Code.NotFound, EEXIST: Code.AlreadyExists, EPERM: Code.PermissionDenied };
    if (typeof e.code === "string" && e.code in sys) return { code: sys[e.code]!, message: String(e.message), details: [] };
  }
  const message = err instanceof Error ? err.message : String(err);
  return { code: Code.Unknown, message, details: [] };
}

export const errorClasses = { byCode: CLASS_BY_CODE, byClass: CODE_BY_CLASS };
