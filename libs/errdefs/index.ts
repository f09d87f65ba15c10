/**
 * Flotilla's one error vocabulary, shaped like containerd's errdefs, and its one mapping to and from
 * gRPC status codes. Classes are decided by the `code` field, never by `instanceof`, so a class survives
 * a trip through gRPC (the message carries containerd's `<context>: <class>` suffix).
 */
import { Status } from "../grpc/status";

export const ErrorCodes = {
  Unknown: "unknown",
  InvalidArgument: "invalid argument",
  NotFound: "not found",
  AlreadyExists: "already exists",
  PermissionDenied: "permission denied",
  ResourceExhausted: "resource exhausted",
  FailedPrecondition: "failed precondition",
  Conflict: "conflict",
  NotModified: "not modified",
  Aborted: "aborted",
  OutOfRange: "out of range",
  NotImplemented: "not implemented",
  Internal: "internal",
  Unavailable: "unavailable",
  DataLoss: "data loss",
  Unauthenticated: "unauthenticated",
  Canceled: "context canceled",
  DeadlineExceeded: "context deadline exceeded",
} as const;
export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];

export class FlotillaError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "FlotillaError";
    this.code = code;
  }
}

/** Build an error whose message is `<context>: <class>`, as containerd's `errors.Wrapf(ErrX, ...)` does. */
function make(code: ErrorCode) {
  return (context?: string, options?: { cause?: unknown }): FlotillaError =>
    new FlotillaError(code, context ? `${context}: ${code}` : code, options);
}

export const errNotFound = make(ErrorCodes.NotFound);
export const errAlreadyExists = make(ErrorCodes.AlreadyExists);
export const errInvalidArgument = make(ErrorCodes.InvalidArgument);
export const errFailedPrecondition = make(ErrorCodes.FailedPrecondition);
export const errConflict = make(ErrorCodes.Conflict);
export const errNotModified = make(ErrorCodes.NotModified);
export const errUnavailable = make(ErrorCodes.Unavailable);
export const errNotImplemented = make(ErrorCodes.NotImplemented);
export const errResourceExhausted = make(ErrorCodes.ResourceExhausted);
export const errInternal = make(ErrorCodes.Internal);
export const errPermissionDenied = make(ErrorCodes.PermissionDenied);
export const errAborted = make(ErrorCodes.Aborted);
export const errOutOfRange = make(ErrorCodes.OutOfRange);
export const errDataLoss = make(ErrorCodes.DataLoss);
export const errUnauthenticated = make(ErrorCodes.Unauthenticated);
export const errCanceled = make(ErrorCodes.Canceled);
export const errDeadlineExceeded = make(ErrorCodes.DeadlineExceeded);

export function errorCode(err: unknown): ErrorCode {
  if (err && typeof err === "object" && "code" in err) {
    const c = (err as { code: unknown }).code;
    if (typeof c === "string" && (Object.values(ErrorCodes) as string[]).includes(c)) return c as ErrorCode;
  }
  return ErrorCodes.Unknown;
}

export const isNotFound = (e: unknown): boolean => errorCode(e) === ErrorCodes.NotFound;
export const isAlreadyExists = (e: unknown): boolean => errorCode(e) === ErrorCodes.AlreadyExists;
export const isInvalidArgument = (e: unknown): boolean => errorCode(e) === ErrorCodes.InvalidArgument;
export const isFailedPrecondition = (e: unknown): boolean => errorCode(e) === ErrorCodes.FailedPrecondition;
export const isUnavailable = (e: unknown): boolean => errorCode(e) === ErrorCodes.Unavailable;
export const isNotImplemented = (e: unknown): boolean => errorCode(e) === ErrorCodes.NotImplemented;

const TO_GRPC: Record<ErrorCode, Status> = {
  [ErrorCodes.Unknown]: Status.UNKNOWN,
  [ErrorCodes.InvalidArgument]: Status.INVALID_ARGUMENT,
  [ErrorCodes.NotFound]: Status.NOT_FOUND,
  [ErrorCodes.AlreadyExists]: Status.ALREADY_EXISTS,
  [ErrorCodes.PermissionDenied]: Status.PERMISSION_DENIED,
  [ErrorCodes.ResourceExhausted]: Status.RESOURCE_EXHAUSTED,
  [ErrorCodes.FailedPrecondition]: Status.FAILED_PRECONDITION,
  [ErrorCodes.Conflict]: Status.FAILED_PRECONDITION,
  [ErrorCodes.NotModified]: Status.FAILED_PRECONDITION,
  [ErrorCodes.Aborted]: Status.ABORTED,
  [ErrorCodes.OutOfRange]: Status.OUT_OF_RANGE,
  [ErrorCodes.NotImplemented]: Status.UNIMPLEMENTED,
  [ErrorCodes.Internal]: Status.INTERNAL,
  [ErrorCodes.Unavailable]: Status.UNAVAILABLE,
  [ErrorCodes.DataLoss]: Status.DATA_LOSS,
  [ErrorCodes.Unauthenticated]: Status.UNAUTHENTICATED,
  [ErrorCodes.Canceled]: Status.CANCELLED,
  [ErrorCodes.DeadlineExceeded]: Status.DEADLINE_EXCEEDED,
};

export interface GrpcErrorShape {
  code: Status;
  details: string;
  message: string;
}

/** A gRPC status error as grpc-js produces it on the client side. */
export function isGrpcStatusError(err: unknown): err is { code: number; details: string; message: string } {
  return !!err && typeof err === "object" && typeof (err as { code?: unknown }).code === "number" && "details" in err;
}

/** Native error -> gRPC status (server side). gRPC status errors pass through unchanged. */
export function toGrpc(err: unknown): GrpcErrorShape {
  if (isGrpcStatusError(err)) return { code: err.code, details: err.details, message: err.details };
  const code = errorCode(err);
  const msg = err instanceof Error ? err.message : String(err);
  return { code: TO_GRPC[code], details: msg, message: msg };
}

/** gRPC status -> native error (client side), recovering conflict / not modified from the message suffix. */
export function fromGrpc(err: unknown): unknown {
  if (!isGrpcStatusError(err)) return err;
  const details = err.details ?? "";
  let code: ErrorCode;
  switch (err.code) {
    case Status.INVALID_ARGUMENT: code = ErrorCodes.InvalidArgument; break;
    case Status.NOT_FOUND: code = ErrorCodes.NotFound; break;
    case Status.ALREADY_EXISTS: code = ErrorCodes.AlreadyExists; break;
    case Status.FAILED_PRECONDITION:
      code = details.endsWith(`: ${ErrorCodes.Conflict}`) ? ErrorCodes.Conflict
        : details.endsWith(`: ${ErrorCodes.NotModified}`) ? ErrorCodes.NotModified
        : ErrorCodes.FailedPrecondition;
      break;
    case Status.UNAVAILABLE: code = ErrorCodes.Unavailable; break;
    case Status.UNIMPLEMENTED: code = ErrorCodes.NotImplemented; break;
    case Status.CANCELLED: code = ErrorCodes.Canceled; break;
    case Status.DEADLINE_EXCEEDED: code = ErrorCodes.DeadlineExceeded; break;
    case Status.RESOURCE_EXHAUSTED: code = ErrorCodes.ResourceExhausted; break;
    case Status.PERMISSION_DENIED: code = ErrorCodes.PermissionDenied; break;
    case Status.UNAUTHENTICATED: code = ErrorCodes.Unauthenticated; break;
    case Status.ABORTED: code = ErrorCodes.Aborted; break;
    case Status.OUT_OF_RANGE: code = ErrorCodes.OutOfRange; break;
    case Status.DATA_LOSS: code = ErrorCodes.DataLoss; break;
    case Status.INTERNAL: code = ErrorCodes.Internal; break;
    default: code = ErrorCodes.Unknown;
  }
  // Keep the message as the server sent it; add the class suffix once if it is missing.
  const message = code === ErrorCodes.Unknown || details.endsWith(`: ${code}`) || details === code ? details : `${details}: ${code}`;
  return new FlotillaError(code, message, { cause: err });
}

/** An error's message without its trailing `: <class>` suffix, for wrapping it in another error. */
export function causeText(err: unknown): string {
  const msg = err instanceof Error ? err.message : String(err);
  const code = errorCode(err);
  return code !== ErrorCodes.Unknown && msg.endsWith(`: ${code}`) ? msg.slice(0, -(code.length + 2)) : msg;
}
