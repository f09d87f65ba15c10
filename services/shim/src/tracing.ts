/**
 * The shim's spans, loaded only when the tasks process handed down an OTLP endpoint in the
 * environment (libs/tracing's tracingEnv): each ttrpc call is a server span continuing the trace the
 * tasks process sent in the request's metadata, and each OCI runtime invocation (runc create, start,
 * kill, delete, ...) a client span under it, so the trace of `ctr run` reaches runc.
 */
import { context } from "@opentelemetry/api";
import { SpanKind, SpanStatusCode, shutdownTracing, tracer, tracingFromEnv } from "#libs/tracing";
import { ttrpcServerSpans } from "#libs/tracing/ttrpc";
import { traceRuntime } from "./runc";

export function startTracing(): void {
  tracingFromEnv("shim");
  traceRuntime(async (binary, args, run) => {
    const command = args[0] ?? "";
    const span = tracer().startSpan(`${binary.split("/").pop()} ${command}`, {
      kind: SpanKind.CLIENT,
      attributes: { "process.executable.name": binary, "process.command_args": [binary, ...args], "flotilla.runtime.command": command },
    }, context.active());
    try {
      const r = await run();
      span.setAttribute("process.exit.code", r.code);
      if (r.code !== 0) span.setStatus({ code: SpanStatusCode.ERROR, message: `exit status ${r.code}` });
      return r;
    } catch (e) {
      span.setStatus({ code: SpanStatusCode.ERROR, message: (e as Error).message });
      throw e;
    } finally {
      span.end();
    }
  });
}

export const wrap = ttrpcServerSpans;
export { shutdownTracing };
