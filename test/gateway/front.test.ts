/**
 * The gateway's HTTP/2 proxy in isolation: a grpc-js server owning two services behind it, and
 * grpc-js clients in front. Bytes, metadata, statuses, deadlines, streaming in both directions with
 * flow control, cancellation in both directions, an owner that is down, and paths nobody owns.
 */
import * as assert from "node:assert/strict";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { after, before, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { background, withHeaders, type CallContext } from "#libs/context";
import { errNotFound, ErrorCodes } from "#libs/errdefs";
import { RpcClient } from "#libs/grpc/client";
import { RpcServer, type Msg, type Send } from "#libs/grpc/server";
import { createLogger } from "#libs/log";
import { Metrics } from "#libs/metrics";
import { GatewayFront } from "#services/gateway/src/front";
import { decodeReadRequest, DirectContentReads, FramePool, NLINK_CHECK_MS } from "#services/gateway/src/content-reads";
import { lookupType } from "#libs/proto";
import { waitFor, testChannels } from "../harness";

const NS = "containerd.services.namespaces.v1.Namespaces";
const CONTENT = "containerd.services.content.v1.Content";
const VERSION = "containerd.services.version.v1.Version";

describe("gateway - HTTP/2 proxy", () => {
  let dir: string;
  let owner: RpcServer;
  let local: RpcServer;
  let front: GatewayFront;
  let metrics: Metrics;
  const seen: { ns?: string; headers?: Record<string, string>; deadline?: Date }[] = [];
  let readAborted = 0;
  let gw: string;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "flt-front-"));
    const log = createLogger("test", "silent");
    owner = new RpcServer({ service: "owner", log });
    owner.addService(NS, {
      Get: async (ctx: CallContext, req: Msg) => {
        seen.push({ ns: ctx.namespace, headers: ctx.headers, deadline: ctx.deadline });
        if (req.name !== "default") throw errNotFound(`namespace ${JSON.stringify(req.name)}: not found`);
        return { namespace: { name: "default", labels: { via: "owner" } } };
      },
    });
    owner.addService(CONTENT, {
      // Streams `size` bytes in 64 KiB messages (a 0 size streams until the client cancels).
      Read: async (ctx: CallContext, req: Msg, send: Send) => {
        const total = Number(req.size);
        let sent = 0;
        try {
          while (total === 0 || sent < total) {
            const n = total === 0 ? 65536 : Math.min(65536, total - sent);
            await send({ offset: sent, data: Buffer.alloc(n, sent % 251) });
            sent += n;
            if (total === 0) await new Promise((r) => setTimeout(r, 5));
          }
        } catch (e) {
          if (ctx.signal.aborted) readAborted++;
          throw e;
        }
      },
      // Echoes each write's data length back as the offset of a response.
      Write: async (_ctx: CallContext, reqs: AsyncIterable<Msg>, send: Send) => {
        let total = 0;
        for await (const r of reqs) {
          total += (r.data as Buffer).length;
          await send({ action: r.action, offset: total });
        }
      },
    });
    local = new RpcServer({ service: "gateway", log });
    local.addService(VERSION, { Version: async () => ({ version: "front-test", revision: "x" }) });
    await owner.listen(`unix://${dir}/owner.sock`);
    await local.listen(`unix://${dir}/local.sock`);
    metrics = new Metrics("gateway-test");
    front = new GatewayFront({
      routes: { [NS]: `unix://${dir}/owner.sock`, [CONTENT]: `unix://${dir}/owner.sock`, "containerd.services.images.v1.Images": `unix://${dir}/nobody.sock` },
      local: `unix://${dir}/local.sock`,
      log,
      metrics,
    });
    gw = `unix://${dir}/gw.sock`;
    await front.listen(gw);
  });

  after(async () => {
    testChannels.close();
    await front?.close(1000);
    await owner?.shutdown(1000);
    await local?.shutdown(1000);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("forwards a unary call with its metadata and deadline, and the answer unchanged", async () => {
    const c = new RpcClient(testChannels.get(gw), NS);
    const deadline = new Date(Date.now() + 30000);
    const res = await c.unary(withHeaders(background("ns-a", { deadline }), { "flotilla-test": "yes" }), "Get", { name: "default" });
    assert.deepEqual(res.namespace, { name: "default", labels: { via: "owner" } });
    const s = seen.at(-1)!;
    assert.equal(s.ns, "ns-a");
    assert.equal(s.headers?.["flotilla-test"], "yes");
    assert.ok(s.deadline && Math.abs(s.deadline.getTime() - deadline.getTime()) < 2000, "the deadline reaches the owner");
  });

  it("passes an error status and its message through", async () => {
    const c = new RpcClient(testChannels.get(gw), NS);
    await assert.rejects(c.unary(background("ns-a"), "Get", { name: "nope" }), (e: Error & { code?: string }) => {
      assert.equal(e.code, ErrorCodes.NotFound);
      assert.match(e.message, /namespace "nope": not found/);
      return true;
    });
  });

  it("streams a large response with flow control, byte for byte", async () => {
    const c = new RpcClient(testChannels.get(gw), CONTENT);
    const size = 24 * 1024 * 1024 + 17;
    let got = 0;
    let ok = true;
    for await (const m of c.serverStream(background("ns-a"), "Read", { digest: "sha256:" + "0".repeat(64), size })) {
      const d = m.data as Buffer;
      if (d[0] !== Number(m.offset) % 251) ok = false;
      got += d.length;
    }
    assert.equal(got, size);
    assert.ok(ok, "every message arrived intact and in order");
  });

  it("carries a bidirectional stream both ways until the client half-closes", async () => {
    const c = new RpcClient(testChannels.get(gw), CONTENT);
    const call = c.bidi(background("ns-a"), "Write");
    const offsets: number[] = [];
    const reading = (async () => {
      for await (const m of call.responses) offsets.push(Number(m.offset));
    })();
    for (let i = 1; i <= 20; i++) await call.send({ action: 1, ref: "r", data: Buffer.alloc(100_000 * i) });
    call.end();
    await reading;
    assert.equal(offsets.length, 20);
    assert.equal(offsets.at(-1), (100_000 * 20 * 21) / 2);
  });

  it("a client's cancel reaches the owner", async () => {
    const c = new RpcClient(testChannels.get(gw), CONTENT);
    const ac = new AbortController();
    const before = readAborted;
    let n = 0;
    await assert.rejects(
      (async () => {
        for await (const _m of c.serverStream(background("ns-a", { signal: ac.signal }), "Read", { digest: "sha256:" + "0".repeat(64), size: 0 })) {
          if (++n === 3) ac.abort();
        }
      })(),
    );
    await waitFor("the owner's handler to see the cancel", () => (readAborted > before ? true : undefined), 5000);
  });

  it("an owner that is down answers Unavailable; nobody's path answers Unimplemented from the gateway itself", async () => {
    const img = new RpcClient(testChannels.get(gw), "containerd.services.images.v1.Images");
    await assert.rejects(img.unary(background("ns-a"), "Get", { name: "x" }), (e: Error & { code?: string }) => e.code === ErrorCodes.Unavailable);
    const raw = new grpc.Client(gw.replace("unix://", "unix:"), grpc.credentials.createInsecure());
    const err = await new Promise<grpc.ServiceError | null>((resolve) =>
      raw.makeUnaryRequest("/no.such.Service/Call", (b: Buffer) => b, (b: Buffer) => b, Buffer.alloc(0), new grpc.Metadata(), {}, (e) => resolve(e)),
    );
    raw.close();
    assert.equal(err?.code, grpc.status.UNIMPLEMENTED);
    const v = await new RpcClient(testChannels.get(gw), VERSION).unary(background(), "Version", {});
    assert.equal(v.version, "front-test", "the gateway's own services are served behind the proxy");
  });

  it("does not count a forwarded call (its owner does), so sums across processes count each call once; a call no owner took is counted here", async () => {
    const text = await metrics.registry.metrics();
    assert.doesNotMatch(text, /grpc_server_(handled|started)_total\{[^}]*grpc_service="containerd.services.(namespaces|content).v1/);
    assert.match(text, /grpc_server_handled_total\{grpc_service="containerd.services.images.v1.Images",grpc_method="Get",grpc_type="unary",grpc_code="Unavailable"[^}]*\} 1/);
    assert.doesNotMatch(text, /grpc_code="OK"[^}]*grpc_service="containerd.services.images/);
  });
});

describe("gateway - content reads from the blob files", () => {
  let dir: string;
  let owner: RpcServer;
  let front: GatewayFront;
  let reads: DirectContentReads;
  let ownerReads = 0;
  let gw: string;
  const blob = crypto.randomBytes(3 * 1024 * 1024 + 5);
  const digest = "sha256:" + crypto.createHash("sha256").update(blob).digest("hex");
  const visibleIn = new Set(["ns-a"]);
  /** What the content database says (undefined: it cannot be read). */
  let dbReadable = true;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "flt-front-reads-"));
    const contentRoot = path.join(dir, "content");
    fs.mkdirSync(path.join(contentRoot, "blobs", "sha256"), { recursive: true });
    fs.writeFileSync(path.join(contentRoot, "blobs", "sha256", digest.slice(7)), blob);
    const log = createLogger("test", "silent");
    // The owner answers for the namespaces that hold the blob, from the same file.
    owner = new RpcServer({ service: "content", log });
    owner.addService(CONTENT, {
      Read: async (ctx: CallContext, req: Msg, send: Send) => {
        ownerReads++;
        if (req.digest !== digest || !visibleIn.has(ctx.namespace ?? "")) throw errNotFound(`content digest ${req.digest}: not found`);
        const off = Number(req.offset);
        const end = Number(req.size) > 0 ? Math.min(blob.length, off + Number(req.size)) : blob.length;
        for (let o = off; o < end; o += 1 << 20) await send({ offset: o, data: blob.subarray(o, Math.min(end, o + (1 << 20))) });
      },
    });
    await owner.listen(`unix://${dir}/owner.sock`);
    reads = new DirectContentReads(contentRoot, (ns, d) => (dbReadable ? d === digest && visibleIn.has(ns) : undefined));
    front = new GatewayFront({ routes: { [CONTENT]: `unix://${dir}/owner.sock` }, local: `unix://${dir}/nobody.sock`, log, contentReads: reads });
    gw = `unix://${dir}/gw.sock`;
    await front.listen(gw);
  });

  after(async () => {
    testChannels.close();
    reads?.close();
    await front?.close(1000);
    await owner?.shutdown(1000);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const readAll = async (ns: string, offset: number, size: number): Promise<Buffer> => {
    const parts: Buffer[] = [];
    for await (const m of new RpcClient(testChannels.get(gw), CONTENT).serverStream(background(ns), "Read", { digest, offset, size })) parts.push(m.data as Buffer);
    return Buffer.concat(parts);
  };

  it("a namespace that holds the blob is served from the file, byte for byte, without the owner", async () => {
    const before = ownerReads;
    assert.ok((await readAll("ns-a", 0, 32768)).equals(blob.subarray(0, 32768)));
    assert.ok((await readAll("ns-a", 1000, 32768)).equals(blob.subarray(1000, 33768)));
    assert.ok((await readAll("ns-a", 0, 0)).equals(blob), "size 0 reads to the end, in several messages");
    assert.ok((await readAll("ns-a", blob.length, 0)).equals(Buffer.alloc(0)));
    assert.equal(ownerReads, before, "served by the gateway");
    await assert.rejects(readAll("ns-a", blob.length + 1, 10), (e: Error & { code?: string }) => e.code === ErrorCodes.OutOfRange && /read past object length/.test(e.message));
  });

  it("another namespace is asked of the owner, which decides", async () => {
    await assert.rejects(readAll("ns-b", 0, 10), (e: Error & { code?: string }) => e.code === ErrorCodes.NotFound);
    await assert.rejects(readAll("ns-b", 0, 10), (e: Error & { code?: string }) => e.code === ErrorCodes.NotFound);
  });

  it("a blob its namespace no longer holds, or a database that cannot be read, is the owner's; a blob gone from disk is never served", async () => {
    visibleIn.delete("ns-a");
    await assert.rejects(readAll("ns-a", 0, 10), (e: Error & { code?: string }) => e.code === ErrorCodes.NotFound);
    visibleIn.add("ns-a");
    dbReadable = false;
    let before = ownerReads;
    await readAll("ns-a", 0, 10);
    assert.equal(ownerReads, before + 1, "asked of the owner");
    dbReadable = true;
    before = ownerReads;
    await readAll("ns-a", 0, 10);
    assert.equal(ownerReads, before, "served here");
    // The file goes away (its descriptor is still open here) while the database still says held: the
    // owner answers (here from its own copy).
    fs.rmSync(path.join(dir, "content", "blobs", "sha256", digest.slice(7)));
    await new Promise((r) => setTimeout(r, NLINK_CHECK_MS + 5));
    assert.ok((await readAll("ns-a", 0, 10)).equals(blob.subarray(0, 10)));
    assert.equal(ownerReads, before + 1);
  });
});

describe("gateway - content read frames", () => {
  const reqT = lookupType("containerd.services.content.v1.ReadContentRequest");
  const resT = lookupType("containerd.services.content.v1.ReadContentResponse");
  const digest = "sha256:" + "ab".repeat(32);
  const enc = (m: Record<string, unknown>): Buffer => Buffer.from(reqT.encode(reqT.fromObject(m)).finish());

  it("decodes what a protobuf encoder writes, and refuses anything else", () => {
    assert.deepEqual(decodeReadRequest(enc({ digest }), 0), { digest, offset: 0, size: 0 });
    assert.deepEqual(decodeReadRequest(enc({ digest, offset: 2 ** 40 + 3, size: 32768 }), 0), { digest, offset: 2 ** 40 + 3, size: 32768 });
    assert.equal(decodeReadRequest(enc({ digest, offset: -1 }), 0), undefined, "negative offset");
    assert.equal(decodeReadRequest(enc({ digest: "sha256:abc" }), 0), undefined, "malformed digest");
    assert.equal(decodeReadRequest(Buffer.concat([enc({ digest }), Buffer.from([0x20, 0x01])]), 0), undefined, "unknown field");
    assert.equal(decodeReadRequest(enc({ digest }).subarray(0, 20), 0), undefined, "truncated");
  });

  it("frames decode as ReadContentResponse, also after a short read", () => {
    const frames = new FramePool();
    for (const [offset, n] of [[0, 32768], [5, 10], [7, 128], [2 ** 33 + 1, 65536], [300, 1 << 20]] as const) {
      const f = frames.take(offset, n);
      const data = crypto.randomBytes(n);
      data.copy(f.buf, f.dataAt);
      let b = f.bytes();
      assert.equal(b[0], 0);
      assert.equal(b.readUInt32BE(1), b.length - 5);
      let m = resT.toObject(resT.decode(b.subarray(5)), { longs: Number }) as { offset?: number; data: Buffer };
      assert.equal(Number(m.offset ?? 0), offset);
      assert.ok(Buffer.from(m.data).equals(data));
      f.shrink(n >> 1);
      b = f.bytes();
      assert.equal(b.readUInt32BE(1), b.length - 5);
      m = resT.toObject(resT.decode(b.subarray(5)), { longs: Number }) as { offset?: number; data: Buffer };
      assert.equal(Number(m.offset ?? 0), offset);
      assert.ok(Buffer.from(m.data).equals(data.subarray(0, n >> 1)));
      frames.give(f);
    }
  });
});
