/**
 * ttrpc with Flotilla's protobuf definitions (libs/proto): a typed client for one service and typed
 * service handlers, both working on plain objects the way libs/grpc does. Processes that must stay
 * small (the shim) use the raw-bytes client and server directly instead.
 */
import { DECODE_OPTIONS, lookupService, type Type } from "../proto";
import type { CallOptions, TtrpcClient } from "./client";
import type { ServerCallContext, ServiceDesc, UnaryHandler } from "./server";
import { classError } from "./errors";

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Msg = Record<string, any>;

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

/** Calls on one ttrpc service of a connection, with plain-object requests and responses. */
export class TypedClient {
  private readonly types: Map<string, MethodTypes>;

  /** `wireName` is the service name sent on the wire when it differs from the proto one (v2/v3 share messages). */
  constructor(readonly client: TtrpcClient, readonly serviceName: string, private readonly wireName = serviceName) {
    this.types = methodTypes(serviceName);
  }

  async call(method: string, req: Msg, opts?: CallOptions): Promise<Msg> {
    const t = this.types.get(method);
    if (!t) throw new Error(`${this.serviceName} has no method ${method}`);
    const res = await this.client.call(this.wireName, method, encodeWith(t.req, req), opts);
    return decodeWith(t.res, res);
  }
}

export type TypedHandler = (ctx: ServerCallContext, req: Msg) => Promise<Msg>;

/** Unary handlers for `serviceName` on plain objects; undecodable requests answer InvalidArgument. */
export function typedService(serviceName: string, handlers: Record<string, TypedHandler>): ServiceDesc {
  const types = methodTypes(serviceName);
  const methods: Record<string, UnaryHandler> = {};
  for (const [name, h] of Object.entries(handlers)) {
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
