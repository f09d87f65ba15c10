/**
 * Pass-through routing: every method of a service owned by another process is registered with raw
 * bytes in and out and forwarded to the owner on a shared channel, keeping metadata and deadline and
 * adding the gateway's trace context. Nothing is re-encoded; flow control is kept end to end.
 */
import * as grpc from "@grpc/grpc-js";
import { sharedChannel } from "../../../libs/grpc/client";
import { methodKind, type RawHandler, type RpcServer } from "../../../libs/grpc/server";
import { lookupService } from "../../../libs/proto";
import { injectIntoMetadata } from "../../../libs/tracing";

const identity = (b: Buffer): Buffer => b;
/** Headers grpc-js sets itself on the outgoing call. */
const HOP_HEADERS = ["user-agent", "content-type", "te", "host", "grpc-accept-encoding", "grpc-encoding", "grpc-timeout", "accept-encoding"];

type Upstream = grpc.ClientReadableStream<Buffer> | grpc.ClientWritableStream<Buffer> | grpc.ClientDuplexStream<Buffer, Buffer>;
type Downstream = grpc.ServerReadableStream<Buffer, Buffer> | grpc.ServerWritableStream<Buffer, Buffer> | grpc.ServerDuplexStream<Buffer, Buffer>;

/** Copy `from` into `to`, pausing `from` while `to` is full. */
function pipeWithBackpressure(from: NodeJS.ReadableStream & { pause(): unknown; resume(): unknown }, to: { write(b: Buffer): boolean; once(ev: "drain", f: () => void): unknown }): void {
  from.on("data", (b: Buffer) => {
    if (!to.write(b)) {
      from.pause();
      to.once("drain", () => from.resume());
    }
  });
}

function statusPromise(up: Upstream): Promise<void> {
  return new Promise((resolve, reject) => {
    up.on("error", (err: grpc.ServiceError) => reject(err));
    up.on("status", (st: grpc.StatusObject) => {
      if (st.code === grpc.status.OK) resolve();
    });
  });
}

export function forwarder(address: string): RawHandler {
  return async (call, info, callback) => {
    const client = sharedChannel(address);
    const md = call.metadata.clone();
    for (const h of HOP_HEADERS) md.remove(h);
    injectIntoMetadata(info.ctx.trace, md);
    const opts: grpc.CallOptions = {};
    const deadline = call.getDeadline();
    if (deadline instanceof Date || (typeof deadline === "number" && Number.isFinite(deadline))) opts.deadline = deadline;
    const down = call as Downstream;
    switch (info.kind) {
      case "unary": {
        const up = client.makeUnaryRequest(info.path, identity, identity, (call as grpc.ServerUnaryCall<Buffer, Buffer>).request, md, opts, (err, res) => {
          if (err) callback!(err);
          else callback!(null, res);
        });
        (call as grpc.ServerUnaryCall<Buffer, Buffer>).on("cancelled", () => up.cancel());
        return;
      }
      case "server_stream": {
        const up = client.makeServerStreamRequest(info.path, identity, identity, (call as grpc.ServerWritableStream<Buffer, Buffer>).request, md, opts);
        down.on("cancelled", () => up.cancel());
        pipeWithBackpressure(up, down as grpc.ServerWritableStream<Buffer, Buffer>);
        await statusPromise(up);
        (down as grpc.ServerWritableStream<Buffer, Buffer>).end();
        return;
      }
      case "client_stream": {
        let upCall: grpc.ClientWritableStream<Buffer> | undefined;
        const done = new Promise<Buffer>((resolve, reject) => {
          upCall = client.makeClientStreamRequest(info.path, identity, identity, md, opts, (err, res) => (err ? reject(err) : resolve(res!)));
        });
        const up = upCall!;
        down.on("cancelled", () => up.cancel());
        pipeWithBackpressure(down as grpc.ServerReadableStream<Buffer, Buffer>, up);
        (down as grpc.ServerReadableStream<Buffer, Buffer>).on("end", () => up.end());
        try {
          callback!(null, await done);
        } catch (e) {
          callback!(e as grpc.ServiceError);
        }
        return;
      }
      case "bidi": {
        const up = client.makeBidiStreamRequest(info.path, identity, identity, md, opts);
        const d = down as grpc.ServerDuplexStream<Buffer, Buffer>;
        d.on("cancelled", () => up.cancel());
        pipeWithBackpressure(d, up);
        d.on("end", () => up.end());
        pipeWithBackpressure(up, d);
        await statusPromise(up);
        d.end();
        return;
      }
    }
  };
}

/** Register pass-through handlers for every method of `services` (proto full names), forwarded to `address`. */
export function routeServices(server: RpcServer, services: readonly string[], address: string): void {
  const handler = forwarder(address);
  for (const name of services) {
    for (const m of lookupService(name).methodsArray) {
      server.register(`/${name}/${m.name}`, methodKind(m.requestStream, m.responseStream), handler);
    }
  }
}

