/**
 * ttrpc with Flotilla's protobuf definitions (libs/proto): a typed client for one service and typed
 * service handlers, both working on plain objects the way libs/grpc does. Processes that must stay
 * small (the shim) use the raw-bytes client and server directly instead.
 */
import { DECODE_OPTIONS, lookupService, type Type } from "../proto";
import type { CheckedHandlers, ClientRequest, ClientResponse, KnownService, MethodName, MethodOfKind, Msg, ServerRequest, ServerResponse, ServiceName } from "../proto/types";
import type { CallOptions, TtrpcClient } from "./client";
import type { ServerCallContext, ServiceDesc, UnaryHandler } from "./server";
import { classError } from "./errors";

export type { Msg };

interface MethodTypes {
  req: Type;
  res: Type;
}

function methodTypes(serviceName: string): Map<string, MethodTypes> {
  const out = new Map<string, MethodTypes>();
  for (const m of lookupService(serviceName).methodsArray) {
    m.resolve();
    out.set(m.name, { req: m.resolvedRequestType!, res: m.resolvedResponseType! });
  }
  return out;
}

const encodeWith = (t: Type, m: Msg): Buffer => Buffer.from(t.encode(t.fromObject(m)).finish());
const decodeWith = (t: Type, b: Uint8Array): Msg => t.toObject(t.decode(b), DECODE_OPTIONS);

/**
 * Calls on one ttrpc service of a connection, with plain-object requests and responses, typed by the
 * service's full name given as a literal (`TypedClient<string>` is the untyped form).
 */
export class TypedClient<S extends string> {
  private readonly types: Map<string, MethodTypes>;

  /** `wireName` is the service name sent on the wire when it differs from the proto one (v2/v3 share messages). */
  constructor(readonly client: TtrpcClient, readonly serviceName: S & KnownService<S>, private readonly wireName: string = serviceName) {
    this.types = methodTypes(serviceName);
  }

  async call<M extends MethodOfKind<S, "unary">>(method: M, req: ClientRequest<S, M>, opts?: CallOptions): Promise<ClientResponse<S, M>> {
    const t = this.types.get(method);
    if (!t) throw new Error(`${this.serviceName} has no method ${method}`);
    const res = await this.client.call(this.wireName, method, encodeWith(t.req, req), opts);
    return decodeWith(t.res, res) as ClientResponse<S, M>;
  }
}

/** The handler of (unary) method `M` of `S`: the decoded request in, an Input message out. */
export type TypedHandler<S extends ServiceName, M extends MethodName<S>> = (ctx: ServerCallContext, req: ServerRequest<S, M>) => Promise<ServerResponse<S, M>>;
export type TypedHandlers<S extends ServiceName> = { [M in MethodName<S>]?: TypedHandler<S, M> };

/** Unary handlers for `serviceName` on plain objects; undecodable requests answer InvalidArgument. */
export function typedService<S extends ServiceName, H extends TypedHandlers<S>>(serviceName: S, handlers: H & CheckedHandlers<S, H>): ServiceDesc {
  const types = methodTypes(serviceName);
  const methods: Record<string, UnaryHandler> = {};
  for (const [name, h] of Object.entries(handlers as Record<string, (ctx: ServerCallContext, req: Msg) => Promise<Msg>>)) {
    const t = types.get(name);
    if (!t) throw new Error(`${serviceName} has no method ${name}`);
    methods[name] = async (ctx, payload) => {
      let req: Msg;
      try {
        req = decodeWith(t.req, payload);
      } catch (e) {
        throw classError("invalid argument", `malformed ${t.req.fullName.slice(1)}: ${(e as Error).message}`);
      }
      return encodeWith(t.res, await h(ctx, req));
    };
  }
  return { methods };
}
