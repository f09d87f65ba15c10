/**
 * RpcClient against a real RpcServer: metadata and deadlines reaching the handler, statuses mapped to
 * errdefs classes, Unavailable while the server is down and reconnecting once it is back, sessions the
 * server rotates with GOAWAY, deadlines and cancellation reaching the handler, flow control both ways
 * for large streams, waitForReady, and an idle client that does not keep its process alive.
 */
import * as assert from "node:assert/strict";
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { after, before, describe, it } from "node:test";
import { ROOT_CONTEXT, trace } from "@opentelemetry/api";
import { background, withHeaders, withLease, type CallContext } from "#libs/context";
import { errNotFound, ErrorCodes, errorCode } from "#libs/errdefs";
import { grpcTimeout, RpcClient } from "#libs/grpc/client";
import { RpcServer, type Msg, type Send } from "#libs/grpc/server";
import { createLogger } from "#libs/log";
import { initTracing } from "#libs/tracing";
import { waitFor, testChannels } from "../harness";

const NS = "containerd.services.namespaces.v1.Namespaces";
const CONTENT = "containerd.services.content.v1.Content";
const log = createLogger("test", "silent");

interface Seen {
  ns?: string;
  lease?: string;
  headers?: Record<string, string>;
  deadline?: Date;
  traceId?: string;
}

/** Run a Node script; its exit code (null when it had not exited after 15 s) and stdout. */
async function runScript(script: string): Promise<{ code: number | null; out: string }> {
  const child = spawn(process.execPath, ["-e", script], { stdio: ["ignore", "pipe", "inherit"] });
  let out = "";
  child.stdout.on("data", (d: Buffer) => (out += d.toString()));
  const code = await new Promise<number | null>((resolve) => {
    const t = setTimeout(() => {
      child.kill("SIGKILL");
      resolve(null);
    }, 15000);
    child.on("exit", (c) => {
      clearTimeout(t);
      resolve(c);
    });
  });
  return { code, out };
}

describe("RpcClient - gRPC on Node's HTTP/2 client", () => {
  let dir: string;
  let sock: string;
  let server: RpcServer | undefined;
  const seen: Seen[] = [];
  const aborted: string[] = [];

  function makeServer(maxStreamsPerSession?: number): RpcServer {
    const s = new RpcServer({ service: "test", log, maxStreamsPerSession });
    s.addService(NS, {
      Get: async (ctx: CallContext, req: Msg) => {
        seen.push({ ns: ctx.namespace, lease: ctx.lease, headers: ctx.headers, deadline: ctx.deadline, traceId: trace.getSpanContext(ctx.trace)?.traceId });
        if (req.name === "slow") {
          await new Promise<void>((resolve) => ctx.signal.addEventListener("abort", () => resolve(), { once: true }));
          aborted.push(errorCode(ctx.signal.reason));
          throw ctx.signal.reason;
        }
        if (req.name === "missing") throw errNotFound(`namespace "missing": not found`);
        return { namespace: { name: req.name, labels: { n: String(seen.length) } } };
      },
    });
    s.addService(CONTENT, {
      // Streams `size` bytes in 1 MiB messages; size 0 streams until cancelled.
      Read: async (ctx: CallContext, req: Msg, send: Send) => {
        const total = Number(req.size);
        let sent = 0;
        try {
          while (total === 0 || sent < total) {
            const n = total === 0 ? 65536 : Math.min(1 << 20, total - sent);
            await send({ offset: sent, data: Buffer.alloc(n, sent % 251) });
            sent += n;
            if (total === 0) await new Promise((r) => setTimeout(r, 5));
          }
        } catch (e) {
          aborted.push(errorCode(ctx.signal.reason));
          throw e;
        }
      },
      Write: async (_ctx: CallContext, reqs: AsyncIterable<Msg>, send: Send) => {
        let total = 0;
        for await (const r of reqs) {
          const d = r.data as Buffer;
          if (d.length && d[d.length - 1] !== d.length % 251) throw new Error("corrupt write");
          total += d.length;
          await send({ action: r.action, offset: total });
        }
      },
    });
    return s;
  }

  before(async () => {
    initTracing("test", ""); // W3C propagation, no exporter
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "flt-rpccli-"));
    sock = `unix://${path.join(dir, "s.sock")}`;
    server = makeServer();
    await server.listen(sock);
  });

  after(async () => {
    testChannels.close();
    await server?.shutdown(100);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("carries namespace, lease, flotilla headers, deadline and trace context; answers come back decoded", async () => {
    const c = new RpcClient(testChannels.get(sock), NS);
    const deadline = new Date(Date.now() + 60000);
    const traceId = "0af7651916cd43dd8448eb211c80319c";
    const parent = trace.setSpanContext(ROOT_CONTEXT, { traceId, spanId: "b7ad6b7169203331", traceFlags: 1 });
    const ctx = withHeaders(withLease(background("ns-a", { deadline, trace: parent }), "lease-1"), { "flotilla-x": "y" });
    const res = await c.unary(ctx, "Get", { name: "default" });
    assert.equal(res.namespace?.name, "default");
    const s = seen.at(-1)!;
    assert.equal(s.ns, "ns-a");
    assert.equal(s.lease, "lease-1");
    assert.equal(s.headers?.["flotilla-x"], "y");
    assert.ok(s.deadline && Math.abs(s.deadline.getTime() - deadline.getTime()) < 2000);
    assert.equal(s.traceId, traceId, "the trace continues on the server");
  });

  it("maps a status to its errdefs class with the server's message", async () => {
    const c = new RpcClient(testChannels.get(sock), NS);
    await assert.rejects(c.unary(background("ns-a"), "Get", { name: "missing" }), (e: Error) => {
      assert.equal(errorCode(e), ErrorCodes.NotFound);
      assert.match(e.message, /namespace "missing": not found/);
      return true;
    });
    const unknown = new RpcClient(testChannels.get(sock), "containerd.services.images.v1.Images");
    await assert.rejects(unknown.unary(background("ns-a"), "Get", { name: "x" }), (e: Error) => errorCode(e) === ErrorCodes.NotImplemented);
  });

  it("a deadline aborts the handler and fails the call with DeadlineExceeded; a past deadline never leaves", async () => {
    const c = new RpcClient(testChannels.get(sock), NS);
    const before = aborted.length;
    await assert.rejects(c.unary(background("ns-a", { deadline: new Date(Date.now() + 100) }), "Get", { name: "slow" }), (e: Error) => errorCode(e) === ErrorCodes.DeadlineExceeded);
    await waitFor("the handler to see its deadline", () => (aborted.length > before ? true : undefined), 5000);
    assert.equal(aborted.at(-1), ErrorCodes.DeadlineExceeded);
    const n = seen.length;
    await assert.rejects(c.unary(background("ns-a", { deadline: new Date(Date.now() - 1) }), "Get", { name: "default" }), (e: Error) => errorCode(e) === ErrorCodes.DeadlineExceeded);
    assert.equal(seen.length, n, "an expired call is not sent");
    assert.equal(grpcTimeout(1500), "1500m");
    assert.equal(grpcTimeout(2e8), "200000S");
  });

  it("cancelling the context cancels the call on both sides", async () => {
    const c = new RpcClient(testChannels.get(sock), NS);
    const ac = new AbortController();
    const before = aborted.length;
    const p = c.unary(background("ns-a", { signal: ac.signal }), "Get", { name: "slow" });
    await waitFor("the call to reach the handler", () => (seen.length && seen.at(-1) ? true : undefined), 5000);
    setTimeout(() => ac.abort(), 50);
    await assert.rejects(p, (e: Error) => errorCode(e) === ErrorCodes.Canceled);
    await waitFor("the handler to see the cancel", () => (aborted.length > before ? true : undefined), 5000);
    assert.equal(aborted.at(-1), ErrorCodes.Canceled);
    // An already cancelled context fails at once.
    await assert.rejects(c.unary(background("ns-a", { signal: AbortSignal.abort() }), "Get", { name: "default" }), (e: Error) => errorCode(e) === ErrorCodes.Canceled);
  });

  it("leaving a server stream early cancels it on the server", async () => {
    const c = new RpcClient(testChannels.get(sock), CONTENT);
    const before = aborted.length;
    let n = 0;
    for await (const _m of c.serverStream(background("ns-a"), "Read", { digest: "sha256:" + "0".repeat(64), size: 0 })) {
      if (++n === 3) break;
    }
    await waitFor("the handler to see the cancel", () => (aborted.length > before ? true : undefined), 5000);
  });

  it("streams a large response to a slow reader with flow control, byte for byte", async () => {
    const c = new RpcClient(testChannels.get(sock), CONTENT);
    const size = 40 * 1024 * 1024 + 3;
    let got = 0;
    let ok = true;
    let i = 0;
    for await (const m of c.serverStream(background("ns-a"), "Read", { digest: "sha256:" + "0".repeat(64), size })) {
      const d = m.data as Buffer;
      if (Number(m.offset) !== got || d[0] !== got % 251) ok = false;
      got += d.length;
      if (++i % 8 === 0) await new Promise((r) => setTimeout(r, 10)); // slower than the server
    }
    assert.equal(got, size);
    assert.ok(ok, "every message arrived intact and in order");
  });

  it("carries a bidirectional stream with large messages both ways", async () => {
    const c = new RpcClient(testChannels.get(sock), CONTENT);
    const call = c.bidi(background("ns-a"), "Write");
    const offsets: number[] = [];
    const reading = (async () => {
      for await (const m of call.responses) offsets.push(Number(m.offset));
    })();
    let total = 0;
    for (let i = 1; i <= 12; i++) {
      const n = 700_000 * i;
      total += n;
      await call.send({ action: 1, ref: "r", data: Buffer.alloc(n, n % 251) });
    }
    call.end();
    await reading;
    assert.equal(offsets.length, 12);
    assert.equal(offsets.at(-1), total);
  });

  it("sessions the server rotates (GOAWAY) are replaced: sequential and concurrent calls keep succeeding", async () => {
    const rsock = `unix://${path.join(dir, "rotating.sock")}`;
    const rs = makeServer(5);
    await rs.listen(rsock);
    try {
      const c = new RpcClient(testChannels.get(rsock), NS);
      for (let i = 0; i < 40; i++) await c.unary(background("ns-a"), "Get", { name: `n${i}` });
      const many = await Promise.all(Array.from({ length: 60 }, (_, i) => c.unary(background("ns-a"), "Get", { name: `c${i}` })));
      assert.equal(many.length, 60);
      assert.equal(many[59]!.namespace?.name, "c59");
    } finally {
      await rs.shutdown(100);
    }
  });

  it("a server that is down answers Unavailable at once; the client reconnects once it is back", async () => {
    const rsock = `unix://${path.join(dir, "restart.sock")}`;
    let rs = makeServer();
    await rs.listen(rsock);
    const c = new RpcClient(testChannels.get(rsock), NS);
    assert.equal((await c.unary(background("ns-a"), "Get", { name: "up" })).namespace?.name, "up");
    await rs.shutdown(100);
    const t0 = Date.now();
    await assert.rejects(c.unary(background("ns-a"), "Get", { name: "down" }), (e: Error) => errorCode(e) === ErrorCodes.Unavailable);
    assert.ok(Date.now() - t0 < 5000, "no waiting for a server that is not there");
    await assert.rejects(c.waitForReady(200));
    rs = makeServer();
    await rs.listen(rsock);
    try {
      await c.waitForReady(5000);
      assert.equal((await c.unary(background("ns-a"), "Get", { name: "again" })).namespace?.name, "again");
    } finally {
      await rs.shutdown(100);
    }
  });

  it("calls in flight finish when the server shuts down gracefully", async () => {
    const rsock = `unix://${path.join(dir, "drain.sock")}`;
    const rs = makeServer();
    await rs.listen(rsock);
    const c = new RpcClient(testChannels.get(rsock), CONTENT);
    const size = 8 * 1024 * 1024;
    const reading = (async () => {
      let got = 0;
      for await (const m of c.serverStream(background("ns-a"), "Read", { digest: "sha256:" + "0".repeat(64), size })) {
        got += (m.data as Buffer).length;
        await new Promise((r) => setTimeout(r, 2));
      }
      return got;
    })();
    await new Promise((r) => setTimeout(r, 20));
    await rs.shutdown(10000);
    assert.equal(await reading, size);
  });

  it("a stream the server ended before this side half-closed is reset by cancel(), and the process exits", async () => {
    // Write fails on a corrupt chunk: the server sends its status while the client's side is still open.
    const script = `
      const { ChannelPool, RpcClient } = require(${JSON.stringify(path.join(__dirname, "../../libs/grpc/client"))});
      const { background } = require(${JSON.stringify(path.join(__dirname, "../../libs/context"))});
      (async () => {
        const call = new RpcClient(new ChannelPool().get(${JSON.stringify(sock)}), ${JSON.stringify(CONTENT)}).bidi(background("ns-a"), "Write");
        await call.send({ action: 1, ref: "r", data: Buffer.from([1, 2, 4]) });
        try {
          for await (const m of call.responses) void m;
        } catch (e) {
          console.log(e.message);
        }
        call.cancel();
      })();
    `;
    const { code, out } = await runScript(script);
    assert.equal(code, 0, "the process exits by itself once the call is cancelled");
    assert.match(out, /corrupt write/);
  });

  it("an idle client does not keep its process alive", async () => {
    const script = `
      const { ChannelPool, RpcClient } = require(${JSON.stringify(path.join(__dirname, "../../libs/grpc/client"))});
      const { background } = require(${JSON.stringify(path.join(__dirname, "../../libs/context"))});
      new RpcClient(new ChannelPool().get(${JSON.stringify(sock)}), ${JSON.stringify(NS)}).unary(background("ns-a"), "Get", { name: "child" })
        .then((r) => console.log(r.namespace.name), (e) => { console.error(e); process.exitCode = 1; });
    `;
    const { code, out } = await runScript(script);
    assert.equal(code, 0, "the process exits by itself after its call");
    assert.equal(out.trim(), "child");
  });
});
