/**
 * RpcServer on the wire, seen by a raw HTTP/2 client: how a unary call's single request is read and
 * judged (none, two, truncated, compressed, oversized, malformed), the answer's framing, and the call
 * context a handler gets (signal made on demand, surviving a spread; cancel and deadline abort it).
 */
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as http2 from "node:http2";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { after, before, describe, it } from "node:test";
import type { CallContext } from "#libs/context";
import { ErrorCodes } from "#libs/errdefs";
import { RpcServer, encodeFrame, type Msg } from "#libs/grpc/server";
import { FrameReader, MessageBuffers } from "#libs/grpc/wire";
import { createLogger } from "#libs/log";
import { decode, encode, lookupType } from "#libs/proto";
import { waitFor } from "../harness";

const NS = "containerd.services.namespaces.v1.Namespaces";

function frame(body: Buffer, flag = 0): Buffer {
  const p = Buffer.alloc(5);
  p[0] = flag;
  p.writeUInt32BE(body.length, 1);
  return Buffer.concat([p, body]);
}

interface Answer {
  status: number;
  message: string;
  messages: Buffer[];
  trailersOnly: boolean;
}

describe("RpcServer - unary calls on the wire", () => {
  let dir: string;
  let server: RpcServer;
  let sock: string;
  let session: http2.ClientHttp2Session;
  const aborts: { reason: unknown; spreadSame: boolean }[] = [];

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "flt-rpcsrv-"));
    sock = path.join(dir, "s.sock");
    server = new RpcServer({ service: "test", log: createLogger("test", "silent"), maxMessage: 1024 });
    server.addService(NS, {
      Get: async (ctx: CallContext, req: Msg) => {
        if (req.name === "wait") {
          // Waits for its signal; a spread context carries the same one.
          const copy = { ...ctx };
          await new Promise<void>((resolve) => ctx.signal.addEventListener("abort", () => resolve(), { once: true }));
          aborts.push({ reason: ctx.signal.reason, spreadSame: copy.signal === ctx.signal });
          throw ctx.signal.reason;
        }
        if (req.name === "big") return { namespace: { name: "x".repeat(2000) } };
        return { namespace: { name: req.name, labels: { ns: ctx.namespace ?? "" } } };
      },
    });
    await server.listen(`unix://${sock}`);
    session = http2.connect("http://localhost", { createConnection: () => net.connect({ path: sock }) });
  });

  after(async () => {
    session.close();
    await server.shutdown(100);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  function call(body: Buffer, extra: http2.OutgoingHttpHeaders = {}, endAfter = true): Promise<Answer> & { stream: http2.ClientHttp2Stream } {
    const st = session.request({ ":method": "POST", ":path": `/${NS}/Get`, "content-type": "application/grpc", te: "trailers", "containerd-namespace": "ns1", ...extra });
    const p = new Promise<Answer>((resolve, reject) => {
      const chunks: Buffer[] = [];
      let head: http2.IncomingHttpHeaders = {};
      let tr: http2.IncomingHttpHeaders | undefined;
      st.on("response", (h) => {
        head = h;
        // A client still sending finishes once the answer is in.
        if (!endAfter) st.end();
      });
      st.on("trailers", (t) => (tr = t));
      st.on("data", (c: Buffer) => chunks.push(c));
      st.on("error", reject);
      st.on("close", () => {
        const all = Buffer.concat(chunks);
        const messages: Buffer[] = [];
        for (let o = 0; o < all.length; ) {
          const n = all.readUInt32BE(o + 1);
          messages.push(all.subarray(o + 5, o + 5 + n));
          o += 5 + n;
        }
        const s = tr ?? head;
        if (s["grpc-status"] === undefined) return reject(new Error(`no status (rst ${st.rstCode})`));
        resolve({ status: Number(s["grpc-status"]), message: decodeURIComponent(String(s["grpc-message"] ?? "")), messages, trailersOnly: !tr });
      });
    });
    if (endAfter) st.end(body);
    else st.write(body);
    return Object.assign(p, { stream: st });
  }

  const req = (name: string): Buffer => encode("containerd.services.namespaces.v1.GetNamespaceRequest", { name });

  it("answers one message and an OK status in trailers", async () => {
    const a = await call(frame(req("default")));
    assert.equal(a.status, 0);
    assert.equal(a.trailersOnly, false);
    assert.equal(a.messages.length, 1);
    assert.deepEqual(decode("containerd.services.namespaces.v1.GetNamespaceResponse", a.messages[0]!), { namespace: { name: "default", labels: { ns: "ns1" } } });
  });

  it("a request split across DATA frames is put back together", async () => {
    const f = frame(req("split"));
    const st = session.request({ ":method": "POST", ":path": `/${NS}/Get`, "content-type": "application/grpc" });
    const got = new Promise<number>((resolve) => {
      st.on("trailers", (t) => resolve(Number(t["grpc-status"])));
    });
    st.on("data", () => undefined);
    st.write(f.subarray(0, 3));
    await new Promise((r) => setTimeout(r, 20));
    st.write(f.subarray(3, 9));
    await new Promise((r) => setTimeout(r, 20));
    st.end(f.subarray(9));
    assert.equal(await got, 0);
  });

  it("judges the request: none, two, truncated, compressed, oversized, malformed", async () => {
    assert.deepEqual(await call(Buffer.alloc(0)).then((a) => [a.status, a.message]), [13, "no request message"]);
    assert.deepEqual(await call(Buffer.concat([frame(req("a")), frame(req("b"))])).then((a) => [a.status, a.message]), [12, "more than one request message for a unary request"]);
    assert.deepEqual(await call(frame(req("abc")).subarray(0, 8)).then((a) => [a.status, a.message]), [13, "request ended inside a message"]);
    const compressed = await call(frame(req("a"), 1));
    assert.equal(compressed.status, 12);
    assert.match(compressed.message, /compressed/);
    // An oversized message is refused at its prefix, before the client has finished sending.
    const big = call(frame(Buffer.alloc(5000)).subarray(0, 100), {}, false);
    const a = await big;
    assert.equal(a.status, 8);
    assert.match(a.message, /larger than max \(5000 vs\. 1024\)/);
    const malformed = await call(frame(Buffer.from([0x0a, 0x10, 0x61])));
    assert.equal(malformed.status, 3);
    assert.match(malformed.message, /malformed containerd.services.namespaces.v1.GetNamespaceRequest/);
  });

  it("an answer larger than the limit is ResourceExhausted", async () => {
    const a = await call(frame(req("big")));
    assert.equal(a.status, 8);
    assert.match(a.message, /trying to send message larger than max/);
  });

  it("a client's cancel aborts the handler's signal, also through a spread context", async () => {
    const before = aborts.length;
    const c = call(frame(req("wait")));
    await new Promise((r) => setTimeout(r, 50));
    c.stream.close(http2.constants.NGHTTP2_CANCEL);
    await c.catch(() => undefined);
    await waitFor("the handler to see the cancel", () => (aborts.length > before ? true : undefined), 5000);
    const ab = aborts.at(-1)!;
    assert.equal(ab.spreadSame, true);
    assert.equal((ab.reason as { code?: string }).code, ErrorCodes.Canceled);
  });

  it("a deadline aborts the handler's signal and answers DeadlineExceeded", async () => {
    const before = aborts.length;
    const a = await call(frame(req("wait")), { "grpc-timeout": "50m" });
    assert.equal(a.status, 4);
    await waitFor("the handler to see the deadline", () => (aborts.length > before ? true : undefined), 5000);
    assert.equal((aborts.at(-1)!.reason as { code?: string }).code, ErrorCodes.DeadlineExceeded);
  });

  it("encodeFrame writes the prefix and the message in one buffer", () => {
    const t = lookupType("containerd.services.namespaces.v1.GetNamespaceRequest");
    const f = encodeFrame(t, { name: "abc" });
    assert.equal(f[0], 0);
    assert.equal(f.readUInt32BE(1), f.length - 5);
    assert.deepEqual(f.subarray(5), req("abc"));
  });
});

describe("FrameReader - pooled message buffers", () => {
  it("a message spanning chunks arrives whole; its buffer, handed back, serves the next one", () => {
    const buffers = new MessageBuffers();
    const reader = new FrameReader(4 << 20, buffers);
    const body = Buffer.alloc(1 << 20, 7);
    const frame = Buffer.concat([Buffer.from([0, 0, 0x10, 0, 0]), body]);
    const got: Buffer[] = [];
    for (let o = 0; o < frame.length; o += 16384) got.push(...reader.push(frame.subarray(o, o + 16384)));
    assert.equal(got.length, 1);
    assert.ok(got[0]!.equals(body));
    const first = got[0]!.buffer;
    buffers.release(got[0]!.subarray(10, 20)); // any view of it
    buffers.release(got[0]!); // a second time: no effect
    const next = buffers.take(1 << 20);
    assert.equal(next.buffer, first, "the released buffer is reused");
    assert.notEqual(buffers.take(1 << 20).buffer, first, "and handed out once");
    buffers.release(Buffer.alloc(1 << 20)); // not from the pool: ignored
    assert.equal(buffers.take(100).length, 100, "small messages are plain allocations");
    const other = new MessageBuffers();
    other.release(next); // not its own: ignored there
    buffers.release(next);
    assert.equal(buffers.take(1 << 20).buffer, first, "a buffer goes back to the pool it came from");
  });
});
