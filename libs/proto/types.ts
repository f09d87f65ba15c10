/**
 * Compile-time types of the wire messages, from the declarations scripts/gen-proto-types.js writes
 * (libs/proto/generated.ts, made by `npm run build` from proto/). Servers receive Decoded requests and
 * return Input responses; clients send Input requests and receive Decoded responses.
 */
import type { Decoded, Input, Services } from "./generated";

export type { Decoded, Input, Services };

export type MessageName = keyof Decoded;
export type ServiceName = keyof Services;
export type CallKind = "unary" | "server_stream" | "client_stream" | "bidi";

/** The untyped shape, for code that forwards messages it does not know (the escape hatch). */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Msg = Record<string, any>;

export type MethodName<S extends ServiceName> = keyof Services[S] & string;

/** `S` when it names a known service, or is the wide `string` (untyped); any other literal fails to compile. */
export type KnownService<S extends string> = string extends S ? string : S extends ServiceName ? S : ServiceName;

interface MethodDesc {
  request: MessageName;
  response: MessageName;
  kind: CallKind;
}

type Desc<S extends ServiceName, M> = M extends MethodName<S> ? (Services[S][M] extends MethodDesc ? Services[S][M] : never) : never;

/** Method names of `S` of one call kind; any string when `S` is not a literal service name. */
export type MethodOfKind<S extends string, K extends CallKind> = S extends ServiceName
  ? { [M in MethodName<S>]: Desc<S, M>["kind"] extends K ? M : never }[MethodName<S>]
  : string;

/** What a client sends to / receives from method `M` of `S` (Msg when `S` is not a known literal). */
export type ClientRequest<S extends string, M> = S extends ServiceName ? Input[Desc<S, M>["request"]] : Msg;
export type ClientResponse<S extends string, M> = S extends ServiceName ? Decoded[Desc<S, M>["response"]] : Msg;

/** What a handler of method `M` of `S` receives and returns (or sends). */
export type ServerRequest<S extends ServiceName, M> = Decoded[Desc<S, M>["request"]];
export type ServerResponse<S extends ServiceName, M> = Input[Desc<S, M>["response"]];

/**
 * `R` (a value a handler built) with every property the message shape `T` does not have turned into
 * `never`, recursively, so that returning `{ ...known, typo: 1 }` from a handler fails to compile and
 * names `typo` (TypeScript checks excess properties of object literals only against declared types,
 * never against the inferred return type of a function).
 */
export type NoExtra<R, T> = R extends Uint8Array | string | number | boolean | bigint | null | undefined | void
  ? R
  : R extends readonly (infer E)[]
    ? NonNullable<T> extends readonly (infer TE)[]
      ? readonly NoExtra<E, TE>[]
      : R
    : R extends object
      ? { [K in keyof R]: K extends keyof NonNullable<T> ? NoExtra<R[K], NonNullable<T>[K]> : never }
      : R;

/**
 * `H` as handlers of `S` (one function per method, any kind) with no method `S` lacks and no property
 * a returned message lacks (see NoExtra): what servers check their handler objects against.
 */
export type CheckedHandlers<S extends ServiceName, H> = {
  [M in keyof H]: M extends MethodName<S>
    ? H[M] extends (...args: infer A) => Promise<infer R>
      ? (...args: A) => Promise<NoExtra<R, ServerResponse<S, M>>>
      : H[M]
    : never;
};
