import * as assert from "node:assert/strict";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { encode } from "#libs/proto";
import { background } from "#libs/context";
import { RpcClient } from "#libs/grpc/client";
import { createLogger } from "#libs/log";
import { RpcServer } from "#libs/grpc/server";
import { CONTENT_SERVICE, registerContentService } from "#services/content/src/server/content";
import { contentSuite, putBlob } from "./suite";
import { openLocal, proxyFixture } from "./fixtures";
import { testChannels } from "../harness";

contentSuite("proxy over gRPC", proxyFixture);
// As the transfer process uses it: writes sent ahead of their acknowledgements.
contentSuite("proxy over gRPC with a write window", () => proxyFixture({ writeWindow: 4 }));

describe("content gRPC - wire behaviour", () => {
  after(() => testChannels.close());

  it("Read streams bounded chunks with absolute offsets, honours offset and size, and rejects reads past the end", async () => {
    const l = await openLocal();
    const server = new RpcServer({ service: "content", log: createLogger("content-test", "silent") });
    registerContentService(server, l.store);
    const sock = path.join(l.root, "wire.sock");
    await server.listen(`unix://${sock}`);
    try {
      const ctx = background("default");
      const data = crypto.randomBytes(3 * 1024 * 1024 + 100);
      const d = await putBlob(l.store, ctx, "r", data);
      const rpc = new RpcClient(testChannels.get(`unix://${sock}`), CONTENT_SERVICE);
      const read = async (req: Record<string, unknown>): Promise<{ offset: number; data: Buffer }[]> => {
        const out: { offset: number; data: Buffer }[] = [];
        for await (const m of rpc.serverStream(ctx, "Read", { digest: d, ...req })) out.push({ offset: Number(m.offset), data: m.data as Buffer });
        return out;
      };
      const all = await read({});
      assert.ok(all.every((m) => m.data.length <= 1024 * 1024), "chunks of at most 1 MiB");
      assert.ok(Buffer.concat(all.map((m) => m.data)).equals(data));
      assert.deepEqual(all.map((m) => m.offset), [0, 1 << 20, 2 << 20, 3 << 20]);
      const win = await read({ offset: 1000, size: 32 * 1024 });
      assert.ok(Buffer.concat(win.map((m) => m.data)).equals(data.subarray(1000, 1000 + 32 * 1024)));
      const tail = await read({ offset: data.length - 10, size: 1000 });
      assert.ok(Buffer.concat(tail.map((m) => m.data)).equals(data.subarray(data.length - 10)), "size past the end is clamped");
      assert.deepEqual(await read({ offset: data.length }), [], "a read at the end is empty");
      await assert.rejects(read({ offset: data.length + 1 }), /read past object length/);
      // The Write session answers the last message once more when it ends (as containerd does).
      const call = rpc.bidi(ctx, "Write");
      await call.send({ action: 0, ref: "twice", total: 3 });
      await call.send({ action: 2, offset: 0, data: Buffer.from("abc"), total: 3 });
      call.end();
      const res: Record<string, unknown>[] = [];
      for await (const m of call.responses) res.push(m);
      assert.equal(res.length, 3);
      assert.deepEqual(res[1], res[2]);
      assert.equal(res[1]!.offset, 3);
    } finally {
      testChannels.close();
      await server.shutdown(1000);
      await l.close();
      fs.rmSync(l.root, { recursive: true, force: true });
    }
  });

  it("sessions rotate every N streams (below nghttp2's reset limit); calls, cancelled or not, keep succeeding", async () => {
    const l = await openLocal();
    const server = new RpcServer({ service: "content", log: createLogger("content-test", "silent"), maxStreamsPerSession: 100 });
    registerContentService(server, l.store);
    const sock = path.join(l.root, "rotate.sock");
    await server.listen(`unix://${sock}`);
    let sessions = 0;
    server.server.on("session", () => sessions++);
    const client = new grpc.Client(`unix://${sock}`, grpc.credentials.createInsecure());
    try {
      const ctx = background("default");
      const data = crypto.randomBytes((1 << 20) + 1);
      const d = await putBlob(l.store, ctx, "r", data);
      const md = new grpc.Metadata();
      md.set("containerd-namespace", "default");
      const id = (b: Buffer): Buffer => b;
      const small = encode("containerd.services.content.v1.ReadContentRequest", { digest: d, offset: 0, size: 32 * 1024 });
      const whole = encode("containerd.services.content.v1.ReadContentRequest", { digest: d });
      const read = (req: Buffer, cancelEarly: boolean): Promise<number> => new Promise((resolve, reject) => {
        let n = 0;
        const call = client.makeServerStreamRequest(`/${CONTENT_SERVICE}/Read`, id, id, req, md, {});
        call.on("data", (b: Buffer) => {
          n += b.length;
          // Cancel with the stream still open, as a proxy forwarding ctr's cancel does.
          if (cancelEarly) call.cancel();
        });
        call.on("error", (e: grpc.ServiceError) => (cancelEarly && e.code === grpc.status.CANCELLED ? resolve(n) : reject(e)));
        call.on("end", () => resolve(n));
      });
      for (let i = 0; i < 150; i++) await read(whole, true);
      for (let i = 0; i < 250; i += 10) {
        const ns = await Promise.all(Array.from({ length: 10 }, () => read(small, false)));
        assert.ok(ns.every((x) => x > 32 * 1024));
      }
      assert.ok(sessions >= 4, `${sessions} sessions for 400 calls`);
    } finally {
      client.close();
      testChannels.close();
      await server.shutdown(1000);
      await l.close();
      fs.rmSync(l.root, { recursive: true, force: true });
    }
  });
});
