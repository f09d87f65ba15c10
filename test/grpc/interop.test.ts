/**
 * Our gRPC transport against grpc-js, both ways. Flotilla's server, client and proxy are our own, on
 * node:http2 (libs/grpc/{server,client,wire}.ts, services/gateway/src/front.ts), kept for a measured
 * ~40% less CPU per call than a general gRPC library; this proves they speak gRPC as grpc-js does:
 *
 *  - grpc-js clients (stubs made by @grpc/proto-loader from test/fixtures/interop.proto) call an
 *    RpcServer whose handlers are registered with `addService`, as every service registers its own;
 *  - our RpcClient calls a grpc-js server serving the same proto;
 *  - a grpc-js client calls a whole stack started with `bin/flotilla up`, through the gateway's proxy to
 *    the owning processes, while every process of that stack (services and warm shims) runs with
 *    @grpc/grpc-js made unresolvable (test/fixtures/no-grpc-js.js, preloaded with NODE_OPTIONS): the
 *    runtime needs no gRPC library, so grpc-js is a devDependency.
 *
 * Each way covers unary, server stream, client stream, bidi (interleaved), deadlines, cancellation,
 * request metadata (incl. `-bin`), response headers and trailers, 8 MiB messages and the 16 MiB limit,
 * errors with `grpc-status-details-bin`, and unknown methods.
 *
 * The other side of Go's gRPC is covered elsewhere and not repeated here: the real `ctr` against the
 * gateway in most test files (e.g. test/foundation/stack.test.ts, test/content/*, test/tasks/*), and the
 * containerd Go client in test/foundation/go-client.test.ts. test/gateway/front.test.ts puts the proxy
 * alone between grpc-js clients and a grpc-js owner; test/libs/grpc-{server,client}.test.ts check our
 * server and client against each other and raw HTTP/2.
 *
 * Where our transport differs from grpc-js on purpose, the test says so and why.
 */
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { after, before, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { background, withHeaders, type CallContext } from "#libs/context";
import { errNotFound, ErrorCodes, errorCode } from "#libs/errdefs";
import { RpcClient, type StatusError } from "#libs/grpc/client";
import { RpcServer, type Msg, type Send } from "#libs/grpc/server";
import { createLogger } from "#libs/log";
import { decode, encode, protoRoot, repoRoot } from "#libs/proto";
import { sleep, startStack, testChannels, waitFor, type Stack } from "../harness";
import { startOtlpReceiver } from "../helpers/otlp";

const FIXTURE = path.join(repoRoot(), "test", "fixtures", "interop.proto");
const NO_GRPC_JS = path.join(repoRoot(), "test", "fixtures", "no-grpc-js.js");
/** A fixture service the generated types do not know: the untyped forms of server and client. */
const SVC: string = "flotilla.test.interop.v1.Interop";
const ECHO = "flotilla.test.interop.v1.Echo";
const MiB = 1 << 20;

interface Echo {
  text?: string;
  data?: Buffer;
  count?: number;
  mode?: string;
  size?: number;
  seen?: Record<string, string>;
}

type JsCallback = (err: grpc.ServiceError | null, res?: Echo) => void;
interface InteropJsClient extends grpc.Client {
  Unary(req: Echo, md: grpc.Metadata, opts: grpc.CallOptions, cb: JsCallback): grpc.ClientUnaryCall;
  ServerStream(req: Echo, md?: grpc.Metadata, opts?: grpc.CallOptions): grpc.ClientReadableStream<Echo>;
  ClientStream(md: grpc.Metadata, opts: grpc.CallOptions, cb: JsCallback): grpc.ClientWritableStream<Echo>;
  Bidi(md?: grpc.Metadata, opts?: grpc.CallOptions): grpc.ClientDuplexStream<Echo, Echo>;
  Missing(req: Echo, md: grpc.Metadata, opts: grpc.CallOptions, cb: JsCallback): grpc.ClientUnaryCall;
}

/** The fixture for grpc-js, through its own loader (not our protobufjs set-up). */
function jsInterop(): grpc.ServiceClientConstructor {
  const def = protoLoader.loadSync(FIXTURE, { keepCase: true, longs: Number, defaults: true });
  const pkg = grpc.loadPackageDefinition(def) as unknown as { flotilla: { test: { interop: { v1: { Interop: grpc.ServiceClientConstructor } } } } };
  return pkg.flotilla.test.interop.v1.Interop;
}

/** The fixture for our side: added to the one proto root, so `addService` and RpcClient find it as they find containerd's. */
function loadFixtureIntoRoot(): void {
  const root = protoRoot();
  if (root.lookup(SVC)) return;
  root.loadSync(FIXTURE, { keepCase: true });
  root.resolveAll();
}

/** A google.rpc.Status for `grpc-status-details-bin`, carrying one Any detail. */
function statusDetails(code: number, message: string): Buffer {
  return encode("google.rpc.Status", {
    code,
    message,
    details: [{ type_url: `type.googleapis.com/${ECHO}`, value: encode(ECHO, { text: "the detail", count: 42 }) }],
  });
}

function assertDetails(bin: Buffer | undefined, code: number, message: string): void {
  assert.ok(bin, "grpc-status-details-bin arrived");
  const st = decode<{ code: number; message: string; details: { type_url: string; value: Buffer }[] }>("google.rpc.Status", bin);
  assert.equal(st.code, code);
  assert.equal(st.message, message);
  assert.equal(st.details.length, 1);
  assert.equal(st.details[0]!.type_url, `type.googleapis.com/${ECHO}`);
  assert.deepEqual(decode(ECHO, st.details[0]!.value), { text: "the detail", count: 42, data: Buffer.alloc(0), mode: "", size: 0, seen: {} });
}

const BLOB = Buffer.from([0, 1, 2, 0xfe, 0xff]);

/** grpc-js's unary call as a promise, with the response headers and the status (trailers) it saw. */
function jsUnary(c: InteropJsClient, req: Echo, md = new grpc.Metadata(), opts: grpc.CallOptions = {}): Promise<{ res?: Echo; err?: grpc.ServiceError; headers?: grpc.Metadata; status: grpc.StatusObject }> {
  return new Promise((resolve) => {
    let res: Echo | undefined;
    let err: grpc.ServiceError | undefined;
    let headers: grpc.Metadata | undefined;
    const call = c.Unary(req, md, opts, (e, r) => {
      err = e ?? undefined;
      res = r;
    });
    call.on("metadata", (m) => (headers = m));
    // grpc-js calls back before it emits 'status'.
    call.on("status", (status) => resolve({ res, err, headers, status }));
  });
}

/** Rejects unless `p` rejects; resolves with the error. */
async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (e) {
    return e;
  }
  assert.fail("the call succeeded");
}

describe("grpc-js clients -> our RpcServer", () => {
  let dir: string;
  let sock: string;
  let server: RpcServer;
  let client: InteropJsClient;
  const aborts: string[] = [];
  let deadlineSeen: Date | undefined;
  let detailsError: Error | undefined;

  before(async () => {
    loadFixtureIntoRoot();
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "flt-interop-"));
    sock = path.join(dir, "ours.sock");
    server = new RpcServer({ service: "test", log: createLogger("test", "silent") });
    server.addUntypedService(SVC, {
      Unary: async (ctx: CallContext, req: Msg) => {
        switch (req.mode) {
          case "deadline":
            deadlineSeen = ctx.deadline;
            await new Promise<void>((resolve) => ctx.signal.addEventListener("abort", () => resolve(), { once: true }));
            aborts.push(`unary ${errorCode(ctx.signal.reason)}`);
            throw ctx.signal.reason;
          case "big":
            return { size: req.count, data: Buffer.alloc(req.count, 7) };
          case "details":
            detailsError = Object.assign(errNotFound(`widget "w1"`), { statusDetails: statusDetails(grpc.status.NOT_FOUND, `widget "w1": not found`) });
            throw detailsError;
          default:
            return { text: req.text, size: (req.data as Buffer).length, seen: { namespace: ctx.namespace ?? "", lease: ctx.lease ?? "", ...ctx.headers } };
        }
      },
      ServerStream: async (ctx: CallContext, req: Msg, send: Send) => {
        if (req.mode === "details") {
          for (let i = 0; i < 2; i++) await send({ text: `${req.text}-${i}`, count: i });
          throw Object.assign(errNotFound(`widget "w1"`), { statusDetails: statusDetails(grpc.status.NOT_FOUND, `widget "w1": not found`) });
        }
        if (req.count === 0) ctx.signal.addEventListener("abort", () => aborts.push(`stream ${errorCode(ctx.signal.reason)}`), { once: true });
        for (let i = 0; req.count === 0 || i < req.count; i++) {
          await send({ text: `${req.text}-${i}`, count: i });
          if (req.count === 0) await sleep(5);
        }
      },
      ClientStream: async (_ctx: CallContext, reqs: AsyncIterable<Msg>) => {
        let count = 0;
        let size = 0;
        for await (const r of reqs) {
          count++;
          size += (r.data as Buffer).length;
        }
        return { count, size };
      },
      Bidi: async (_ctx: CallContext, reqs: AsyncIterable<Msg>, send: Send) => {
        for await (const r of reqs) await send({ text: String(r.text).toUpperCase(), count: r.count });
      },
      // Missing: not registered, so Unimplemented.
    });
    await server.listen(sock);
    const Interop = jsInterop();
    // grpc-js receives at most 4 MiB by default; opened wide so the limits seen are our server's.
    client = new Interop(`unix:${sock}`, grpc.credentials.createInsecure(), { "grpc.max_receive_message_length": 64 * MiB, "grpc.max_send_message_length": 64 * MiB }) as unknown as InteropJsClient;
  });

  after(async () => {
    client?.close();
    await server?.shutdown(100);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("unary: request metadata reaches the handler's context, incl. a -bin header; the answer comes with headers and an OK status", async () => {
    const md = new grpc.Metadata();
    md.set("containerd-namespace", "ns1");
    md.set("containerd-lease", "lease1");
    md.set("flotilla-tag", "v1");
    md.set("flotilla-blob-bin", BLOB);
    md.set("x-other", "not carried");
    const { res, err, headers, status } = await jsUnary(client, { text: "hello", data: Buffer.from("abc") }, md);
    assert.equal(err, undefined);
    assert.equal(res!.text, "hello");
    assert.equal(res!.size, 3);
    // Deliberate: a handler's CallContext carries containerd's namespace and lease headers and
    // Flotilla's own `flotilla-*` metadata, not every header (containerd's services read nothing else).
    // A `-bin` value arrives as sent on the wire, base64, for the handler to decode.
    const { "flotilla-blob-bin": bin, ...rest } = res!.seen!;
    assert.deepEqual(rest, { namespace: "ns1", lease: "lease1", "flotilla-tag": "v1" });
    assert.deepEqual(Buffer.from(bin!, "base64"), BLOB);
    // Response headers arrive (our server sends no custom ones: containerd's API defines none).
    assert.ok(headers, "response headers");
    // (Node's HTTP/2 adds a `date` header of its own, which gRPC clients pass over.)
    const { date: _date, ...own } = headers.getMap();
    assert.deepEqual(own, { "content-type": "application/grpc" });
    assert.equal(status.code, grpc.status.OK);
    // And trailers with the status alone.
    assert.deepEqual(status.metadata.getMap(), {});
  });

  it("a compressed request is UNIMPLEMENTED, as containerd answers it", async () => {
    // Deliberate: only the identity encoding is spoken. containerd registers no gRPC compressor
    // either, and neither ctr nor the Go client compresses.
    const gz = new (jsInterop())(`unix:${sock}`, grpc.credentials.createInsecure(), { "grpc.default_compression_algorithm": grpc.compressionAlgorithms.gzip }) as unknown as InteropJsClient;
    try {
      const { err } = await jsUnary(gz, { text: "squeezed", data: Buffer.alloc(4096, 1) });
      assert.equal(err?.code, grpc.status.UNIMPLEMENTED);
      assert.match(err!.details, /compressed messages are not supported/);
    } finally {
      gz.close();
    }
  });

  it("server stream, client stream and an interleaved bidi stream", async () => {
    const got: Echo[] = [];
    const ss = client.ServerStream({ text: "s", count: 5 });
    for await (const m of ss) got.push(m as Echo);
    assert.deepEqual(got.map((m) => [m.text, m.count]), [["s-0", 0], ["s-1", 1], ["s-2", 2], ["s-3", 3], ["s-4", 4]]);

    const sum = await new Promise<Echo>((resolve, reject) => {
      const cs = client.ClientStream(new grpc.Metadata(), {}, (e, r) => (e ? reject(e) : resolve(r!)));
      for (let i = 0; i < 4; i++) cs.write({ data: Buffer.alloc(1024, i) });
      cs.end();
    });
    assert.deepEqual([sum.count, sum.size], [4, 4096]);

    // Each answer is read before the next request is written: neither side waits for half-close.
    const bidi = client.Bidi();
    const answers: Echo[] = [];
    bidi.on("data", (m: Echo) => answers.push(m));
    for (let i = 0; i < 5; i++) {
      bidi.write({ text: `m${i}`, count: i });
      await waitFor(`answer ${i}`, () => (answers.length === i + 1 ? true : undefined), 15000, 5);
      assert.deepEqual([answers[i]!.text, answers[i]!.count], [`M${i}`, i]);
    }
    const status = new Promise<grpc.StatusObject>((resolve) => bidi.on("status", resolve));
    bidi.end();
    assert.equal((await status).code, grpc.status.OK);
  });

  it("deadline: the handler sees it and its signal aborts; the client gets DEADLINE_EXCEEDED", async () => {
    const deadline = new Date(Date.now() + 1500);
    const { err } = await jsUnary(client, { mode: "deadline" }, new grpc.Metadata(), { deadline });
    assert.equal(err?.code, grpc.status.DEADLINE_EXCEEDED);
    assert.ok(deadlineSeen, "the handler saw a deadline");
    assert.ok(Math.abs(deadlineSeen.getTime() - deadline.getTime()) < 1000, `deadline seen ${deadlineSeen.toISOString()} vs ${deadline.toISOString()}`);
    await waitFor("the handler's abort", () => (aborts.includes(`unary ${ErrorCodes.DeadlineExceeded}`) ? true : undefined));
  });

  it("cancellation: a client cancelling mid-stream aborts the handler's signal", async () => {
    const ss = client.ServerStream({ text: "c", count: 0 });
    const err = await new Promise<grpc.ServiceError>((resolve) => {
      let n = 0;
      ss.on("data", () => {
        if (++n === 3) ss.cancel();
      });
      ss.on("error", resolve);
    });
    assert.equal(err.code, grpc.status.CANCELLED);
    await waitFor("the stream handler's abort", () => (aborts.includes(`stream ${ErrorCodes.Canceled}`) ? true : undefined));
  });

  it("large messages: 8 MiB both ways; over 16 MiB is RESOURCE_EXHAUSTED both ways", async () => {
    const up = await jsUnary(client, { text: "big", data: Buffer.alloc(8 * MiB, 1) });
    assert.equal(up.res?.size, 8 * MiB);
    const down = await jsUnary(client, { mode: "big", count: 8 * MiB });
    assert.equal(down.res?.data?.length, 8 * MiB);
    assert.equal(down.res!.data![8 * MiB - 1], 7);

    const tooBigUp = await jsUnary(client, { data: Buffer.alloc(17 * MiB) });
    assert.equal(tooBigUp.err?.code, grpc.status.RESOURCE_EXHAUSTED);
    assert.match(tooBigUp.err!.details, /received message larger than max/);
    const tooBigDown = await jsUnary(client, { mode: "big", count: 17 * MiB });
    assert.equal(tooBigDown.err?.code, grpc.status.RESOURCE_EXHAUSTED);
    assert.match(tooBigDown.err!.details, /trying to send message larger than max/);
  });

  it("an error with details: code, message and grpc-status-details-bin reach the client", async () => {
    const { err } = await jsUnary(client, { mode: "details" });
    assert.equal(err?.code, grpc.status.NOT_FOUND);
    assert.equal(err!.details, detailsError!.message);
    assertDetails(err!.metadata.get("grpc-status-details-bin")[0] as Buffer | undefined, grpc.status.NOT_FOUND, `widget "w1": not found`);

    // The same after messages were sent: the status and its details come in the trailers.
    const ss = client.ServerStream({ text: "d", mode: "details" });
    const got: Echo[] = [];
    const streamErr = await new Promise<grpc.ServiceError>((resolve) => {
      ss.on("data", (m: Echo) => got.push(m));
      ss.on("error", resolve);
    });
    assert.deepEqual(got.map((m) => m.text), ["d-0", "d-1"]);
    assert.equal(streamErr.code, grpc.status.NOT_FOUND);
    assert.equal(streamErr.details, `widget "w1": not found`);
    assertDetails(streamErr.metadata.get("grpc-status-details-bin")[0] as Buffer | undefined, grpc.status.NOT_FOUND, `widget "w1": not found`);
  });

  it("an unknown method, or one the service does not serve, is UNIMPLEMENTED", async () => {
    const missing = await new Promise<grpc.ServiceError | null>((resolve) => client.Missing({}, new grpc.Metadata(), {}, (e) => resolve(e)));
    assert.equal(missing?.code, grpc.status.UNIMPLEMENTED);
    const raw = await new Promise<grpc.ServiceError | null>((resolve) =>
      client.makeUnaryRequest("/no.such.Service/Call", (b: Buffer) => b, (b: Buffer) => b, Buffer.alloc(0), new grpc.Metadata(), {}, (e) => resolve(e)),
    );
    assert.equal(raw?.code, grpc.status.UNIMPLEMENTED);
  });
});

describe("our RpcClient -> a grpc-js server", () => {
  let dir: string;
  let server: grpc.Server;
  let client: RpcClient<string>;
  const cancelled: string[] = [];
  let deadlineSeen: Date | undefined;

  before(async () => {
    loadFixtureIntoRoot();
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "flt-interop-"));
    const sock = path.join(dir, "js.sock");
    server = new grpc.Server({ "grpc.max_receive_message_length": 16 * MiB });
    const first = (md: grpc.Metadata, k: string): string => String(md.get(k)[0] ?? "");
    server.addService(jsInterop().service, {
      Unary: (call: grpc.ServerUnaryCall<Echo, Echo>, cb: grpc.sendUnaryData<Echo>) => {
        const r = call.request;
        switch (r.mode) {
          case "deadline": {
            const d = call.getDeadline(); // a Date, or milliseconds since the epoch
            deadlineSeen = d instanceof Date ? d : new Date(d);
            const t = setTimeout(() => cb(null, {}), 30_000);
            call.on("cancelled", () => {
              clearTimeout(t);
              cancelled.push("unary");
            });
            return;
          }
          case "big":
            return cb(null, { size: r.count, data: Buffer.alloc(r.count!, 7) });
          case "details": {
            const md = new grpc.Metadata();
            md.set("grpc-status-details-bin", statusDetails(grpc.status.NOT_FOUND, `widget "w1": not found`));
            return cb({ code: grpc.status.NOT_FOUND, details: `widget "w1": not found`, metadata: md });
          }
          default: {
            // Response headers and trailers of its own, which our client must pass over (see below).
            const h = new grpc.Metadata();
            h.set("x-response", "header");
            h.set("x-response-bin", BLOB);
            call.sendMetadata(h);
            const t = new grpc.Metadata();
            t.set("x-trailer", "trailer");
            t.set("x-trailer-bin", BLOB);
            const md = call.metadata;
            const bin = md.get("flotilla-blob-bin")[0];
            return cb(null, {
              text: r.text,
              size: r.data!.length,
              seen: { namespace: first(md, "containerd-namespace"), lease: first(md, "containerd-lease"), "flotilla-tag": first(md, "flotilla-tag"), "flotilla-blob-bin": Buffer.isBuffer(bin) ? bin.toString("hex") : "not binary" },
            }, t);
          }
        }
      },
      ServerStream: (call: grpc.ServerWritableStream<Echo, Echo>) => {
        const r = call.request;
        if (r.mode === "details") {
          for (let i = 0; i < 2; i++) call.write({ text: `${r.text}-${i}`, count: i });
          const md = new grpc.Metadata();
          md.set("grpc-status-details-bin", statusDetails(grpc.status.NOT_FOUND, `widget "w1": not found`));
          call.emit("error", { code: grpc.status.NOT_FOUND, details: `widget "w1": not found`, metadata: md });
          return;
        }
        if (r.count) {
          for (let i = 0; i < r.count; i++) call.write({ text: `${r.text}-${i}`, count: i });
          call.end();
          return;
        }
        let i = 0;
        const t = setInterval(() => call.write({ text: `${r.text}-${i}`, count: i++ }), 5);
        call.on("cancelled", () => {
          clearInterval(t);
          cancelled.push(`stream ${r.text}`);
        });
      },
      ClientStream: (call: grpc.ServerReadableStream<Echo, Echo>, cb: grpc.sendUnaryData<Echo>) => {
        let count = 0;
        let size = 0;
        call.on("data", (m: Echo) => {
          count++;
          size += m.data!.length;
        });
        call.on("end", () => cb(null, { count, size }));
      },
      Bidi: (call: grpc.ServerDuplexStream<Echo, Echo>) => {
        call.on("data", (m: Echo) => call.write({ text: m.text!.toUpperCase(), count: m.count }));
        call.on("end", () => call.end());
      },
      // Missing: grpc-js answers UNIMPLEMENTED for a method without an implementation.
    });
    await new Promise<void>((resolve, reject) => server.bindAsync(`unix:${sock}`, grpc.ServerCredentials.createInsecure(), (e) => (e ? reject(e) : resolve())));
    client = new RpcClient(testChannels.get(`unix://${sock}`), SVC);
  });

  after(async () => {
    testChannels.close();
    await new Promise<void>((resolve) => server?.tryShutdown(() => resolve()));
    server?.forceShutdown();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("unary: namespace, lease and flotilla headers (incl. -bin) reach the server; its response headers and trailers do not disturb the call", async () => {
    const ctx = withHeaders(background("ns1", { lease: "lease1" }), { "flotilla-tag": "v1", "flotilla-blob-bin": BLOB.toString("base64") });
    const res = await client.unary(ctx, "Unary", { text: "hello", data: Buffer.from("abc") });
    assert.equal(res.text, "hello");
    assert.equal(res.size, 3);
    // grpc-js decoded our -bin header to the same bytes.
    assert.deepEqual(res.seen, { namespace: "ns1", lease: "lease1", "flotilla-tag": "v1", "flotilla-blob-bin": BLOB.toString("hex") });
    // Deliberate: RpcClient returns the message alone. Response headers and trailers other than the
    // status are not surfaced, as no containerd API sends any; the call must simply not trip on them.
  });

  it("server stream, client stream and an interleaved bidi stream", async () => {
    const got: Msg[] = [];
    for await (const m of client.serverStream(background(), "ServerStream", { text: "s", count: 5 })) got.push(m);
    assert.deepEqual(got.map((m) => [m.text, m.count]), [["s-0", 0], ["s-1", 1], ["s-2", 2], ["s-3", 3], ["s-4", 4]]);

    // RpcClient has no call of its own for client streams (containerd's API has no such method):
    // bidi() sends the stream and reads the one answer.
    const cs = client.bidi(background(), "ClientStream");
    for (let i = 0; i < 4; i++) await cs.send({ data: Buffer.alloc(1024, i) });
    cs.end();
    const sums: Msg[] = [];
    for await (const m of cs.responses) sums.push(m);
    assert.deepEqual(sums.map((m) => [m.count, m.size]), [[4, 4096]]);

    const bidi = client.bidi(background(), "Bidi");
    const answers = bidi.responses[Symbol.asyncIterator]();
    for (let i = 0; i < 5; i++) {
      await bidi.send({ text: `m${i}`, count: i });
      const a = await answers.next();
      assert.deepEqual([a.value.text, a.value.count], [`M${i}`, i]);
    }
    bidi.end();
    assert.equal((await answers.next()).done, true);
  });

  it("deadline: the server sees it; the call fails with DeadlineExceeded and the server's call is cancelled", async () => {
    const deadline = new Date(Date.now() + 1500);
    const t0 = Date.now();
    const err = await rejection(client.unary({ ...background(), deadline }, "Unary", { mode: "deadline" }));
    assert.equal(errorCode(err), ErrorCodes.DeadlineExceeded);
    assert.ok(Date.now() - t0 < 15_000, "failed at the deadline, not when the server would have answered (30 s)");
    assert.ok(deadlineSeen && Number.isFinite(deadlineSeen.getTime()), "grpc-js saw a deadline");
    assert.ok(Math.abs(deadlineSeen.getTime() - deadline.getTime()) < 1000, `deadline seen ${deadlineSeen.toISOString()} vs ${deadline.toISOString()}`);
    await waitFor("the server's call to be cancelled", () => (cancelled.includes("unary") ? true : undefined));
  });

  it("cancellation: leaving a stream, or aborting the context, cancels the server's call", async () => {
    let n = 0;
    for await (const m of client.serverStream(background(), "ServerStream", { text: "leave", count: 0 })) {
      assert.equal(m.count, n);
      if (++n === 3) break;
    }
    await waitFor("the left stream to be cancelled", () => (cancelled.includes("stream leave") ? true : undefined));

    const ac = new AbortController();
    const ctx = { ...background(), signal: ac.signal };
    const err = await rejection((async () => {
      let k = 0;
      for await (const _m of client.serverStream(ctx, "ServerStream", { text: "abort", count: 0 })) if (++k === 3) ac.abort();
    })());
    assert.equal(errorCode(err), ErrorCodes.Canceled);
    await waitFor("the aborted stream to be cancelled", () => (cancelled.includes("stream abort") ? true : undefined));
  });

  it("large messages: 8 MiB both ways; over 16 MiB is ResourceExhausted both ways", async () => {
    const up = await client.unary(background(), "Unary", { text: "big", data: Buffer.alloc(8 * MiB, 1) });
    assert.equal(up.size, 8 * MiB);
    const down = await client.unary(background(), "Unary", { mode: "big", count: 8 * MiB });
    assert.equal((down.data as Buffer).length, 8 * MiB);
    assert.equal((down.data as Buffer)[8 * MiB - 1], 7);

    // Our client refuses to send what a server with the same limit would refuse to read, as grpc-js
    // does with grpc.max_send_message_length set: the bytes never leave.
    const tooBigUp = await rejection(client.unary(background(), "Unary", { data: Buffer.alloc(17 * MiB) }));
    assert.equal(errorCode(tooBigUp), ErrorCodes.ResourceExhausted);
    assert.match((tooBigUp as Error).message, /trying to send message larger than max/);
    // grpc-js sends without limit by default; our client refuses to read it.
    const tooBigDown = await rejection(client.unary(background(), "Unary", { mode: "big", count: 17 * MiB }));
    assert.equal(errorCode(tooBigDown), ErrorCodes.ResourceExhausted);
    assert.match((tooBigDown as Error).message, /received message larger than max/);
  });

  it("an error with details: mapped to its errdefs class with the server's message; the details stay on the cause", async () => {
    const err = await rejection(client.unary(background(), "Unary", { mode: "details" }));
    assert.equal(errorCode(err), ErrorCodes.NotFound);
    assert.equal((err as Error).message, `widget "w1": not found`);
    const cause = (err as Error).cause as StatusError;
    assert.equal(cause.code, grpc.status.NOT_FOUND);
    assertDetails(cause.statusDetails, grpc.status.NOT_FOUND, `widget "w1": not found`);

    // The same after messages were received: the messages first, then the error.
    const got: Msg[] = [];
    const streamErr = await rejection((async () => {
      for await (const m of client.serverStream(background(), "ServerStream", { text: "d", mode: "details" })) got.push(m);
    })());
    assert.deepEqual(got.map((m) => m.text), ["d-0", "d-1"]);
    assert.equal(errorCode(streamErr), ErrorCodes.NotFound);
    assertDetails(((streamErr as Error).cause as StatusError).statusDetails, grpc.status.NOT_FOUND, `widget "w1": not found`);
  });

  it("details pass through a Flotilla process that relays the error unchanged (grpc-js -> RpcServer -> RpcClient -> grpc-js)", async () => {
    const relay = new RpcServer({ service: "relay", log: createLogger("test", "silent") });
    relay.addUntypedService(SVC, { Unary: (ctx: CallContext, req: Msg) => client.unary(ctx, "Unary", req) });
    const sock = path.join(dir, "relay.sock");
    await relay.listen(sock);
    const js = new (jsInterop())(`unix:${sock}`, grpc.credentials.createInsecure()) as unknown as InteropJsClient;
    try {
      const { err } = await jsUnary(js, { mode: "details" });
      assert.equal(err?.code, grpc.status.NOT_FOUND);
      assert.equal(err!.details, `widget "w1": not found`);
      assertDetails(err!.metadata.get("grpc-status-details-bin")[0] as Buffer | undefined, grpc.status.NOT_FOUND, `widget "w1": not found`);
    } finally {
      js.close();
      await relay.shutdown(100);
    }
  });

  it("a method the server does not implement is NotImplemented", async () => {
    const err = await rejection(client.unary(background(), "Missing", {}));
    assert.equal(errorCode(err), ErrorCodes.NotImplemented);
  });
});

describe("grpc-js client -> gateway proxy -> owners, in a stack running without grpc-js", () => {
  let stack: Stack;
  let client: grpc.Client;
  let hookDir: string;
  let otlp: Awaited<ReturnType<typeof startOtlpReceiver>>;

  const unary = (method: string, reqType: string, resType: string, req: Record<string, unknown>, ns?: string): Promise<Record<string, unknown>> => {
    const md = new grpc.Metadata();
    if (ns) md.set("containerd-namespace", ns);
    return new Promise((resolve, reject) =>
      client.makeUnaryRequest(method, (m: Record<string, unknown>) => encode(reqType, m), (b: Buffer) => decode(resType, b), req, md, {}, (e, r) => (e ? reject(e) : resolve(r!))),
    );
  };
  const listStream = (ns?: string): Promise<Record<string, unknown>[]> => {
    const md = new grpc.Metadata();
    if (ns) md.set("containerd-namespace", ns);
    const call = client.makeServerStreamRequest(
      "/containerd.services.containers.v1.Containers/ListStream",
      (m: Record<string, unknown>) => encode("containerd.services.containers.v1.ListContainersRequest", m),
      (b: Buffer) => decode("containerd.services.containers.v1.ListContainerMessage", b),
      {}, md, {},
    );
    return new Promise((resolve, reject) => {
      const out: Record<string, unknown>[] = [];
      call.on("data", (m: Record<string, unknown>) => out.push(m));
      call.on("error", reject);
      call.on("end", () => resolve(out));
    });
  };

  before(async () => {
    hookDir = fs.mkdtempSync(path.join(os.tmpdir(), "flt-interop-hook-"));
    // With an OTLP endpoint every process also loads its trace exporter, which must not need grpc-js either.
    otlp = await startOtlpReceiver();
    const saved = { NODE_OPTIONS: process.env.NODE_OPTIONS, log: process.env.FLOTILLA_TEST_GRPCJS_LOG };
    process.env.NODE_OPTIONS = `${saved.NODE_OPTIONS ?? ""} --require ${NO_GRPC_JS}`.trim();
    process.env.FLOTILLA_TEST_GRPCJS_LOG = hookDir;
    try {
      stack = await startStack({ otlpEndpoint: otlp.endpoint });
    } finally {
      if (saved.NODE_OPTIONS === undefined) delete process.env.NODE_OPTIONS;
      else process.env.NODE_OPTIONS = saved.NODE_OPTIONS;
      if (saved.log === undefined) delete process.env.FLOTILLA_TEST_GRPCJS_LOG;
      else process.env.FLOTILLA_TEST_GRPCJS_LOG = saved.log;
    }
    client = new grpc.Client(`unix:${stack.socket}`, grpc.credentials.createInsecure());
  });

  after(async () => {
    client?.close();
    await stack?.stop();
    await otlp?.close();
    fs.rmSync(hookDir, { recursive: true, force: true });
  });

  it("unary calls and a server stream reach their owners with the namespace header", async () => {
    const created = await unary("/containerd.services.namespaces.v1.Namespaces/Create", "containerd.services.namespaces.v1.CreateNamespaceRequest", "containerd.services.namespaces.v1.CreateNamespaceResponse", { namespace: { name: "interop", labels: { via: "grpc-js" } } });
    assert.deepEqual(created.namespace, { name: "interop", labels: { via: "grpc-js" } });
    const spec = { type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec", value: Buffer.from("{}") };
    for (const id of ["c1", "c2"]) {
      await unary("/containerd.services.containers.v1.Containers/Create", "containerd.services.containers.v1.CreateContainerRequest", "containerd.services.containers.v1.CreateContainerResponse", { container: { id, runtime: { name: "io.containerd.runc.v2" }, spec } }, "interop");
    }
    const listed = await listStream("interop");
    assert.deepEqual(listed.map((m) => (m.container as { id: string }).id).sort(), ["c1", "c2"]);
    assert.deepEqual(await listStream("default"), []);
    // Without the header the owner answers as containerd does.
    const err = (await rejection(listStream())) as grpc.ServiceError;
    assert.equal(err.code, grpc.status.FAILED_PRECONDITION);
    assert.match(err.details, /namespace is required/);
  });

  it("no process of the stack loaded @grpc/grpc-js (it was unresolvable in each of them)", async () => {
    const ran = fs.readdirSync(hookDir).filter((f) => f.startsWith("ran-")).map((f) => fs.readFileSync(path.join(hookDir, f), "utf8"));
    for (const s of ["content", "snapshots", "images", "tasks", "transfer", "sandbox", "gateway"]) {
      assert.ok(ran.some((argv) => argv.includes(`/services/${s}/main.js`)), `the hook ran in the ${s} process`);
    }
    // Warm shims (started ahead of any task) run under it too.
    await waitFor("a warm shim under the hook", () => (fs.readdirSync(hookDir).some((f) => f.startsWith("ran-") && fs.readFileSync(path.join(hookDir, f), "utf8").includes("shim")) ? true : undefined), 15000, 100);
    const asked = fs.readdirSync(hookDir).filter((f) => f.startsWith("asked-")).map((f) => fs.readFileSync(path.join(hookDir, f), "utf8"));
    assert.deepEqual(asked, [], "processes that asked for @grpc/grpc-js");
    const r = await stack.ctr(["version"]);
    assert.equal(r.code, 0, r.stderr);
    // The exporters ran: the gateway's and the owners' spans of the calls above arrived.
    await waitFor("the tasks process's span of ListStream", () => (otlp.spans.some((x) => x.service === "flotilla-tasks" && x.name === "containerd.services.containers.v1.Containers/ListStream") ? true : undefined), 20000, 200);
  });
});
