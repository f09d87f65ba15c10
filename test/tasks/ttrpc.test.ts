/**
 * libs/ttrpc: the frame format and envelopes byte for byte, stream-id rules, errors in both
 * directions with containerd's codes, deadlines, oversized frames, streams, close hooks, and the
 * status table against libs/errdefs.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { status as GrpcStatus } from "@grpc/grpc-js";
import { errNotFound, errorCode, ErrorCodes, fromGrpc, toGrpc } from "#libs/errdefs";
import {
  Code,
  encodeFrame,
  Flags,
  FrameReader,
  MessageType,
  TtrpcClient,
  TtrpcServer,
  classError,
  isClosedError,
  NAMESPACE_KEY,
  type ServerCallContext,
} from "#libs/ttrpc";
import { decodeRequest, decodeResponse, encodeRequest, encodeResponse } from "#libs/ttrpc/wire";
import { errorClasses } from "#libs/ttrpc/errors";
import { TypedClient, typedService } from "#libs/ttrpc/typed";
import { encode, decode } from "#libs/proto";

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ""), "hex");

describe("ttrpc - wire format", () => {
  test("frame header: length, stream id, type, flags, big-endian", () => {
    assert.deepEqual(encodeFrame(1, MessageType.Response, 0, Buffer.from("hello")), hex("00000005 00000001 02 00 68656c6c6f"));
    const r = new FrameReader();
    const f = encodeFrame(7, MessageType.Data, Flags.RemoteClosed | Flags.NoData);
    const whole = Buffer.concat([encodeFrame(3, 1, 0, Buffer.from("abc")), f]);
    const out = [...r.push(whole.subarray(0, 4)), ...r.push(whole.subarray(4, 15)), ...r.push(whole.subarray(15))];
    assert.deepEqual(out.map((x) => (x.kind === "frame" ? [x.frame.streamId, x.frame.type, x.frame.flags, x.frame.data.toString()] : x)), [[3, 1, 0, "abc"], [7, 3, 5, ""]]);
  });

  test("oversized frames are reported once and their bytes skipped", () => {
    const r = new FrameReader(8);
    const big = encodeFrame(5, 1, 0, Buffer.alloc(20, 1));
    const ok = encodeFrame(7, 1, 0, Buffer.from("ok"));
    const out = [...r.push(big.subarray(0, 12)), ...r.push(Buffer.concat([big.subarray(12), ok]))];
    assert.deepEqual(out.map((x) => x.kind), ["oversize", "frame"]);
    assert.equal(out[0]!.kind === "oversize" && out[0]!.length, 20);
  });

  test("Request and Response envelopes match the ttrpc protos byte for byte", () => {
    const req = { service: "containerd.task.v2.Task", method: "State", payload: Buffer.from([1, 2]), timeoutNano: 5_000_000_000, metadata: { [NAMESPACE_KEY]: ["default"], k: ["a", "b"] } };
    const mine = encodeRequest(req);
    const theirs = encode("ttrpc.Request", {
      service: req.service,
      method: req.method,
      payload: req.payload,
      timeout_nano: req.timeoutNano,
      metadata: [{ key: NAMESPACE_KEY, value: "default" }, { key: "k", value: "a" }, { key: "k", value: "b" }],
    });
    assert.deepEqual(mine, theirs);
    assert.deepEqual(decodeRequest(theirs), req);
    const res = encodeResponse({ payload: Buffer.alloc(0), status: { code: 5, message: "x: not found", details: [{ typeUrl: "t", value: Buffer.from("v") }] } });
    assert.deepEqual(res, encode("ttrpc.Response", { status: { code: 5, message: "x: not found", details: [{ type_url: "t", value: Buffer.from("v") }] } }));
    assert.deepEqual(decodeResponse(res).status, { code: 5, message: "x: not found", details: [{ typeUrl: "t", value: Buffer.from("v") }] });
    assert.deepEqual(encodeResponse({ payload: Buffer.from("p"), status: { code: 0, message: "", details: [] } }), hex("1201 70"), "an OK reply has no status");
    assert.equal(decode<{ service: string }>("ttrpc.Request", mine).service, req.service);
  });

  test("status codes and classes agree with libs/errdefs", () => {
    for (const [codeNum, cls] of Object.entries(errorClasses.byCode)) {
      const viaGrpc = fromGrpc({ code: Number(codeNum), details: "x", message: "x" });
      assert.equal(errorCode(viaGrpc), cls, `code ${codeNum}`);
      assert.equal(toGrpc(classError(cls as never, "ctx")).code, Number(codeNum));
    }
    assert.equal(toGrpc(classError("conflict", "c")).code, GrpcStatus.FAILED_PRECONDITION);
  });
});

describe("ttrpc - client and server", () => {
  let dir: string;
  let server: TtrpcServer;
  let sock: string;
  const seen: ServerCallContext[] = [];

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "flt-ttrpc-"));
    sock = path.join(dir, "t.sock");
    server = new TtrpcServer();
    server.register("test.Echo", {
      methods: {
        Echo: async (ctx, p) => {
          seen.push(ctx);
          return p;
        },
        Slow: async (ctx) => {
          await new Promise((r) => setTimeout(r, 300));
          return Buffer.from(ctx.deadline ? "deadline" : "none");
        },
        Fail: async () => {
          throw errNotFound("thing \"x\"");
        },
        Plain: async () => {
          throw new Error("boom");
        },
        Hang: () => new Promise(() => undefined),
      },
      streams: {
        Count: {
          serverStreaming: true,
          clientStreaming: false,
          handler: async (_ctx, s, first) => {
            for (let i = 0; i < Number(first.toString()); i++) s.send(Buffer.from(String(i)));
          },
        },
        Sum: {
          serverStreaming: false,
          clientStreaming: true,
          handler: async (_ctx, s) => {
            let n = 0;
            for await (const m of s.messages) n += Number(m.toString());
            return Buffer.from(String(n));
          },
        },
      },
    });
    server.register("containerd.services.events.ttrpc.v1.Events", typedService("containerd.services.events.ttrpc.v1.Events", {
      Forward: async (_ctx, req) => {
        if (req.envelope?.topic !== "/tasks/start") throw classError("invalid argument", "topic");
        return {};
      },
    }));
    await server.listen(`unix://${sock}`);
  });

  after(async () => {
    await server.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test("unary calls, metadata, concurrent responses matched by stream id", async () => {
    const c = await TtrpcClient.connect(sock);
    const rs = await Promise.all([c.call("test.Echo", "Slow", Buffer.alloc(0)), c.call("test.Echo", "Echo", Buffer.from("a"), { metadata: { [NAMESPACE_KEY]: ["ns1"] } })]);
    assert.equal(rs[0].toString(), "none");
    assert.equal(rs[1].toString(), "a");
    assert.equal(seen.at(-1)!.namespace, "ns1");
    assert.equal((await c.call("test.Echo", "Slow", Buffer.alloc(0), { timeoutMs: 5000 })).toString(), "deadline");
    assert.equal((fs.statSync(sock).mode & 0o777).toString(8), "600");
    c.close();
  });

  test("errors: handler classes, unknown service and method, plain errors", async () => {
    const c = await TtrpcClient.connect(sock);
    await assert.rejects(c.call("test.Echo", "Fail", Buffer.alloc(0)), (e: Error) => errorCode(e) === ErrorCodes.NotFound && e.message === 'thing "x": not found');
    await assert.rejects(c.call("test.Nope", "X", Buffer.alloc(0)), (e: Error) => errorCode(e) === ErrorCodes.NotImplemented && /service test\.Nope/.test(e.message));
    await assert.rejects(c.call("test.Echo", "Nope", Buffer.alloc(0)), (e: Error) => errorCode(e) === ErrorCodes.NotImplemented && /method Nope/.test(e.message));
    await assert.rejects(c.call("test.Echo", "Plain", Buffer.alloc(0)), (e: Error) => errorCode(e) === ErrorCodes.Unknown && e.message === "boom");
    await assert.rejects(c.call("test.Echo", "Hang", Buffer.alloc(0), { timeoutMs: 100 }), (e: Error) => errorCode(e) === ErrorCodes.DeadlineExceeded);
    c.close();
  });

  test("typed client and service on the protos", async () => {
    const c = await TtrpcClient.connect(sock);
    const t = new TypedClient(c, "containerd.services.events.ttrpc.v1.Events");
    assert.deepEqual(await t.call("Forward", { envelope: { timestamp: { seconds: 1 }, namespace: "n", topic: "/tasks/start", event: { type_url: "x", value: Buffer.alloc(0) } } }), {});
    await assert.rejects(t.call("Forward", { envelope: { topic: "/tasks/other" } }), (e: Error) => errorCode(e) === ErrorCodes.InvalidArgument);
    c.close();
  });

  test("streams: server-streaming and client-streaming", async () => {
    const c = await TtrpcClient.connect(sock);
    const got: string[] = [];
    for await (const m of c.stream("test.Echo", "Count", { clientStreaming: false }, Buffer.from("3"))) got.push(m.toString());
    assert.deepEqual(got, ["0", "1", "2"]);
    const s = c.stream("test.Echo", "Sum", { clientStreaming: true });
    for (const n of [1, 2, 39]) s.send(Buffer.from(String(n)));
    s.closeSend();
    const sum: string[] = [];
    for await (const m of s) sum.push(m.toString());
    assert.deepEqual(sum, ["42"]);
    c.close();
  });

  test("protocol rules on raw frames: even and reused stream ids, Data on a dead stream, oversized frames", async () => {
    const s = net.createConnection(sock);
    await new Promise((r) => s.once("connect", r));
    const reader = new FrameReader(8 << 20);
    const frames: { id: number; code: number; msg: string }[] = [];
    s.on("data", (b: Buffer) => {
      for (const r of reader.push(b)) if (r.kind === "frame") frames.push({ id: r.frame.streamId, code: decodeResponse(r.frame.data).status?.code ?? 0, msg: decodeResponse(r.frame.data).status?.message ?? "" });
    });
    const req = encodeRequest({ service: "test.Echo", method: "Echo", payload: Buffer.from("x"), timeoutNano: 0, metadata: {} });
    s.write(encodeFrame(2, MessageType.Request, 0, req));
    s.write(encodeFrame(5, MessageType.Request, 0, req));
    await new Promise((r) => setTimeout(r, 100));
    s.write(encodeFrame(3, MessageType.Request, 0, req));
    s.write(encodeFrame(9, MessageType.Data, 0, Buffer.from("x")));
    s.write(encodeFrame(11, MessageType.Request, 0, Buffer.alloc(5 << 20)));
    s.write(encodeFrame(13, MessageType.Request, 0, Buffer.from([0xff, 0xff])));
    await new Promise((r) => setTimeout(r, 300));
    s.destroy();
    const by = new Map(frames.map((f) => [f.id, f]));
    assert.deepEqual(by.get(2), { id: 2, code: Code.InvalidArgument, msg: "StreamID must be odd for client initiated streams" });
    assert.deepEqual(by.get(5), { id: 5, code: 0, msg: "" });
    assert.deepEqual(by.get(3), { id: 3, code: Code.InvalidArgument, msg: "StreamID cannot be re-used and must increment" });
    assert.deepEqual(by.get(9), { id: 9, code: Code.InvalidArgument, msg: "StreamID is no longer active" });
    assert.equal(by.get(11)?.code, Code.ResourceExhausted);
    assert.match(by.get(11)!.msg, /exceed maximum message size of 4194304/);
    assert.equal(by.get(13)?.code, Code.InvalidArgument);
  });

  test("the close hook fires once when the server goes away; pending calls fail as closed", async () => {
    const other = new TtrpcServer();
    other.register("test.Hang", { methods: { Hang: () => new Promise(() => undefined) } });
    const p = path.join(dir, "other.sock");
    await other.listen(p);
    let closes = 0;
    const c = await TtrpcClient.connect(p, { onClose: () => closes++ });
    const pending = c.call("test.Hang", "Hang", Buffer.alloc(0));
    await new Promise((r) => setTimeout(r, 50));
    await other.close();
    await assert.rejects(pending, (e) => isClosedError(e));
    await c.closed;
    assert.equal(closes, 1);
    await assert.rejects(c.call("test.Hang", "Hang", Buffer.alloc(0)), (e) => isClosedError(e));
  });

  test("connect retries until the socket appears", async () => {
    const p = path.join(dir, "late.sock");
    const late = new TtrpcServer();
    late.register("test.E", { methods: { E: async (_c, b) => b } });
    setTimeout(() => void late.listen(p), 150);
    const c = await TtrpcClient.connect(p, { retryMs: 3000 });
    assert.equal((await c.call("test.E", "E", Buffer.from("z"))).toString(), "z");
    c.close();
    await late.close();
    await assert.rejects(TtrpcClient.connect(path.join(dir, "never.sock")), (e: Error) => errorCode(e) === ErrorCodes.Unavailable);
  });
});
