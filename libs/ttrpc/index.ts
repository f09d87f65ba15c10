/** ttrpc: containerd's lightweight RPC over unix sockets (shims, the events socket). */
export { TtrpcClient, NAMESPACE_KEY } from "./client";
export type { CallOptions, ClientStream, ConnectOptions } from "./client";
export { TtrpcServer } from "./server";
export type { ServerCallContext, ServerStream, ServiceDesc, StreamHandler, StreamMethod, UnaryHandler } from "./server";
export { TtrpcError, classError, closedError, isClosedError, errorFromStatus, statusFromError } from "./errors";
export type { ErrorClass } from "./errors";
export { Code, Flags, MessageType, MAX_MESSAGE_LENGTH, HEADER_LENGTH, encodeFrame, FrameReader, socketPath } from "./wire";
export type { Frame, Metadata, Status } from "./wire";
