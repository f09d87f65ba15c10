/**
 * The per-call context every core interface method takes first, mirroring Go's ctx in containerd:
 * namespace and lease (from the `containerd-namespace` / `containerd-lease` headers), cancellation,
 * deadline, trace context and a logger.
 */
import { setMaxListeners } from "node:events";
import { context as otelContext, type Context as OtelContext } from "@opentelemetry/api";
import type { Logger } from "pino";
import { errFailedPrecondition, errInvalidArgument } from "../errdefs";

export const NAMESPACE_HEADER = "containerd-namespace";
export const LEASE_HEADER = "containerd-lease";

export interface CallContext {
  namespace?: string;
  lease?: string;
  /** Flotilla's own call metadata (`flotilla-*` headers), carried between processes. */
  headers?: Record<string, string>;
  signal: AbortSignal;
  deadline?: Date;
  trace: OtelContext;
  log?: Logger;
}

/**
 * A context for calls a process makes on its own behalf (not inside an incoming RPC). Its signal may
 * carry any number of abort listeners: one long-lived context often serves many calls at once (a
 * collection's fan-out, a burst of requests), each listening while it runs.
 */
export function background(namespace?: string, extra: Partial<CallContext> = {}): CallContext {
  const signal = new AbortController().signal;
  setMaxListeners(0, signal);
  return { namespace, signal, trace: otelContext.active(), ...extra };
}

export function withNamespace(ctx: CallContext, namespace: string): CallContext {
  return { ...ctx, namespace };
}

export function withLease(ctx: CallContext, lease: string | undefined): CallContext {
  return { ...ctx, lease };
}

export function withHeaders(ctx: CallContext, headers: Record<string, string>): CallContext {
  return { ...ctx, headers: { ...ctx.headers, ...headers } };
}

const IDENTIFIER = /^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$/;
export const MAX_IDENTIFIER_LENGTH = 76;

/** containerd's identifiers.Validate. */
export function validateIdentifier(s: string): void {
  if (s.length === 0) throw errInvalidArgument("identifier must not be empty");
  if (s.length > MAX_IDENTIFIER_LENGTH) {
    throw errInvalidArgument(`identifier ${JSON.stringify(s)} greater than maximum length (${MAX_IDENTIFIER_LENGTH} characters)`);
  }
  if (!IDENTIFIER.test(s)) throw errInvalidArgument(`identifier ${JSON.stringify(s)} must match ${IDENTIFIER.source}`);
}

/** The namespace of the call, validated; FailedPrecondition when absent, as containerd's NamespaceRequired. */
export function namespaceRequired(ctx: CallContext): string {
  const ns = ctx.namespace;
  if (!ns) throw errFailedPrecondition("namespace is required");
  try {
    validateIdentifier(ns);
  } catch (e) {
    throw errInvalidArgument(`namespace validation: ${(e as Error).message.replace(/: invalid argument$/, "")}`);
  }
  return ns;
}
