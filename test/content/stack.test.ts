/**
 * Content acceptance with the real `ctr` against a whole Flotilla stack: ingest (with and without an
 * expected digest), get, ls with filters, label, rm, namespaces and shared content, bad input, events,
 * `content fetch --plain-http` from a real docker-registry holding an image built here, and kill -9 of
 * the content process in the middle of a large ingest, then resume.
 */
import * as assert from "node:assert/strict";
import { spawn } from "node:child_process";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, describe, it } from "node:test";
import { background } from "#libs/context";
import { ErrorCodes } from "#libs/errdefs";
import { RpcClient } from "#libs/grpc/client";
import { NatsEventBus, type Envelope } from "#libs/events";
import { createLogger } from "#libs/log";
import { decode } from "#libs/proto";
import { ContentStoreProxy } from "#libs/clients/content";
import { startStack, waitFor, sleep, type CtrResult, type Stack, testChannels } from "../harness";
import { startRegistry, type Registry } from "../helpers/registry";
import { buildBusyboxImage, pushImage, type BuiltImage } from "../helpers/image";
import { rejectsWith } from "./suite";

const sha = (b: Uint8Array): string => "sha256:" + crypto.createHash("sha256").update(b).digest("hex");

/** ctr with stdin from a file: seekable, as `ctr ... < file` in a shell (needed to resume and for shared content). */
function ctrFromFile(s: Stack, args: string[], file: string, namespace = "default"): { done: Promise<CtrResult>; pid: number } {
  const fd = fs.openSync(file, "r");
  const child = spawn("ctr", ["-a", s.socket, "-n", namespace, ...args], { stdio: [fd, "pipe", "pipe"] });
  fs.closeSync(fd);
  let stdout = "";
  let stderr = "";
  child.stdout!.on("data", (b: Buffer) => (stdout += b.toString()));
  child.stderr!.on("data", (b: Buffer) => (stderr += b.toString()));
  const done = new Promise<CtrResult>((resolve, reject) => {
    child.on("error", reject);
    child.on("close", (code) => resolve({ code: code ?? 1, stdout, stderr }));
  });
  return { done, pid: child.pid! };
}

/** Lines of `ctr content ls -q`. */
async function lsq(s: Stack, filters: string[] = [], namespace?: string): Promise<string[]> {
  const r = await s.ctr(["content", "ls", "-q", ...filters], { namespace });
  assert.equal(r.code, 0, r.stderr);
  return r.stdout.split("\n").filter(Boolean).sort();
}

describe("content - ctr against the stack", () => {
  let s: Stack;
  let tmp: string;
  let gcN = 0;
  const events: Envelope[] = [];
  let bus: NatsEventBus;
  /** Let any garbage collection triggered by earlier deletions finish (ctr's `leases rm --sync`). */
  const gcSync = async (namespace = "default"): Promise<void> => {
    const id = `gc-sync-${++gcN}`;
    assert.equal((await s.ctr(["leases", "create", "--id", id], { namespace })).code, 0);
    const r = await s.ctr(["leases", "rm", "--sync", id], { namespace });
    assert.equal(r.code, 0, r.stderr);
  };

  before(async () => {
    s = await startStack();
    tmp = fs.mkdtempSync(path.join(s.dir, "content-test-"));
    bus = new NatsEventBus({ url: s.natsUrl, prefix: "flotilla.events", log: createLogger("test", "silent"), name: "content-test" });
    bus.subscribe((env) => events.push(env));
  });

  after(async () => {
    await bus?.close();
    await s?.stop();
  });

  it("ingest without and with an expected digest, get, ls", async () => {
    await gcSync();
    const a = crypto.randomBytes(300_000);
    const b = crypto.randomBytes(2 * 1024 * 1024 + 3);
    let r = await s.ctr(["content", "ingest", "ingest-a"], { input: a });
    assert.equal(r.code, 0, r.stderr);
    r = await s.ctr(["content", "ingest", "--expected-digest", sha(b), "--expected-size", String(b.length), "ingest-b"], { input: b });
    assert.equal(r.code, 0, r.stderr);
    const ls = await lsq(s);
    assert.ok(ls.includes(sha(a)) && ls.includes(sha(b)), ls.join(","));
    const got = await new Promise<Buffer>((resolve, reject) => {
      const c = spawn("ctr", ["-a", s.socket, "content", "get", sha(b)]);
      const out: Buffer[] = [];
      c.stdout.on("data", (d: Buffer) => out.push(d));
      c.on("error", reject);
      c.on("close", (code) => (code === 0 ? resolve(Buffer.concat(out)) : reject(new Error(`ctr content get exited ${code}`))));
    });
    assert.ok(got.equals(b), "content get returns the bytes ingested");
    // Ingesting it again is fine: the blob already exists (AlreadyExists at the first STAT).
    r = await s.ctr(["content", "ingest", "--expected-digest", sha(b), "ingest-b2"], { input: b });
    assert.equal(r.code, 0, r.stderr);
    r = await s.ctr(["content", "active"]);
    assert.doesNotMatch(r.stdout, /ingest-/, "no ingest left behind");
    const full = await s.ctr(["content", "ls"]);
    assert.match(full.stdout, new RegExp(`${sha(b)}\\s+2\\.097MB`));
  });

  it("label and ls with filters; rm", async () => {
    await gcSync();
    const x = Buffer.from("filter me: x");
    const y = Buffer.from("filter me: yy");
    for (const [ref, data] of [["fx", x], ["fy", y]] as const) assert.equal((await s.ctr(["content", "ingest", ref], { input: data })).code, 0);
    let r = await s.ctr(["content", "label", sha(x), "kind=x", "containerd.io/gc.root=test"]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(r.stdout.trim().split(",").sort(), ["containerd.io/gc.root=test", "kind=x"]);
    r = await s.ctr(["content", "label", sha(y), "kind=y", "containerd.io/gc.root=test"]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(await lsq(s, ["labels.kind==x"]), [sha(x)]);
    assert.deepEqual(await lsq(s, ["labels.kind"]), [sha(x), sha(y)].sort());
    assert.deepEqual(await lsq(s, [`digest==${sha(y)}`]), [sha(y)]);
    assert.deepEqual(await lsq(s, [`size==${y.length}`]), [sha(y)]);
    assert.deepEqual(await lsq(s, ["labels.kind==x", "labels.kind==y"]), [sha(x), sha(y)].sort(), "filters are ORed");
    assert.deepEqual(await lsq(s, ["labels.kind==x,size==1"]), [], "selectors are ANDed");
    r = await s.ctr(["content", "ls", "labels.kind==x"]);
    assert.match(r.stdout, /kind=x/);
    // An empty value deletes the label.
    r = await s.ctr(["content", "label", sha(x), "kind="]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(await lsq(s, ["labels.kind"]), [sha(y)]);
    // rm prints what it removed; NotFound is skipped silently.
    r = await s.ctr(["content", "rm", sha(x), sha(y)]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(r.stdout.trim().split("\n"), [sha(x), sha(y)]);
    r = await s.ctr(["content", "rm", sha(x)]);
    assert.equal(r.code, 0);
    assert.equal(r.stdout.trim(), "");
    r = await s.ctr(["content", "get", sha(x)]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /not found/);
    await waitFor("the /content/delete event", () => events.some((e) => e.topic === "/content/delete" && decode<{ digest: string }>("containerd.events.ContentDelete", e.event.value).digest === sha(x)) || undefined, 5000);
    assert.ok(events.some((e) => e.topic === "/content/create" && e.namespace === "default" && decode<{ digest: string; size: number }>("containerd.events.ContentCreate", e.event.value).digest === sha(x)));
  });

  it("namespaces: a blob is visible only where it was committed; shared content needs no data", async () => {
    await gcSync("ns-a");
    const file = path.join(tmp, "shared.bin");
    const data = crypto.randomBytes(1024 * 1024);
    fs.writeFileSync(file, data);
    let r = await ctrFromFile(s, ["content", "ingest", "--expected-digest", sha(data), "shared"], file, "ns-a").done;
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(await lsq(s, [], "ns-b"), []);
    assert.notEqual((await s.ctr(["content", "get", sha(data)], { namespace: "ns-b" })).code, 0);
    const namespaces = async (): Promise<string[]> => (await s.ctr(["namespaces", "ls", "-q"])).stdout.split("\n");
    assert.equal((await namespaces()).includes("ns-b"), false);
    // In ns-b the first STAT already reports offset == total: ctr commits without sending data.
    const before = Date.now();
    r = await ctrFromFile(s, ["content", "ingest", "--expected-digest", sha(data), "shared"], file, "ns-b").done;
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(await lsq(s, [], "ns-b"), [sha(data)]);
    assert.ok(Date.now() - before < 5000);
    assert.equal((await namespaces()).includes("ns-b"), true, "the first write in a namespace creates it");
    const blobs = fs.readdirSync(path.join(s.root, "content", "blobs", "sha256"));
    assert.equal(blobs.filter((b) => `sha256:${b}` === sha(data)).length, 1, "stored once");
    assert.equal((await s.ctr(["content", "rm", sha(data)], { namespace: "ns-a" })).code, 0);
    assert.deepEqual(await lsq(s, [], "ns-a"), []);
    const got = await s.ctr(["content", "get", sha(data)], { namespace: "ns-b" });
    assert.equal(got.code, 0, "still readable in ns-b");
    assert.equal((await s.ctr(["content", "rm", sha(data)], { namespace: "ns-b" })).code, 0);
  });

  it("a namespace deleted once empty is created again by the next write into it", async () => {
    const namespaces = async (): Promise<string[]> => (await s.ctr(["namespaces", "ls", "-q"])).stdout.split("\n");
    const data = crypto.randomBytes(1000);
    let r = await s.ctr(["content", "ingest", "again-1"], { namespace: "ns-again", input: data });
    assert.equal(r.code, 0, r.stderr);
    assert.ok((await namespaces()).includes("ns-again"));
    assert.equal((await s.ctr(["content", "rm", sha(data)], { namespace: "ns-again" })).code, 0);
    r = await s.ctr(["namespaces", "rm", "ns-again"]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal((await namespaces()).includes("ns-again"), false);
    // The content process hears of the deletion on NATS, as this test's own subscriber does.
    await waitFor("/namespaces/delete", () => (events.some((e) => e.topic === "/namespaces/delete" && decode<{ name: string }>("containerd.events.NamespaceDelete", e.event.value).name === "ns-again") ? true : undefined), 10000);
    await sleep(300);
    r = await s.ctr(["content", "ingest", "again-2"], { namespace: "ns-again", input: data });
    assert.equal(r.code, 0, r.stderr);
    assert.ok((await namespaces()).includes("ns-again"), "the write created the namespace again");
    assert.equal((await s.ctr(["content", "rm", sha(data)], { namespace: "ns-again" })).code, 0);
  });

  it("bad input: wrong digest, wrong size, a write at a wrong offset, a malformed digest, an unknown ref", async () => {
    await gcSync();
    const data = Buffer.from("some data that will not commit");
    const wrong = sha(Buffer.from("something else"));
    let r = await s.ctr(["content", "ingest", "--expected-digest", wrong, "bad-digest"], { input: data });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /unexpected commit digest .*, expected .*: failed precondition/);
    r = await s.ctr(["content", "ingest", "--expected-size", "3", "bad-size"], { input: data });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /failed size validation: 30 != 3: failed precondition/);
    assert.deepEqual((await lsq(s)).filter((d) => d === sha(data) || d === wrong), [], "nothing committed");
    r = await s.ctr(["content", "active"]);
    assert.match(r.stdout, /bad-digest/, "the failed ingest stays, resumable");

    const ctx = background("default");
    const store = new ContentStoreProxy(testChannels.get(s.socket));
    await store.abort(ctx, "bad-digest");
    await store.abort(ctx, "bad-size");
    await rejectsWith(store.abort(ctx, "no-such-ref"), ErrorCodes.NotFound, /reference no-such-ref: not found/);
    await rejectsWith(store.status(ctx, "no-such-ref"), ErrorCodes.NotFound);
    await rejectsWith(store.info(ctx, "sha256:1234"), ErrorCodes.InvalidArgument, /failed validation/);
    await rejectsWith(store.delete(ctx, "not-a-digest"), ErrorCodes.InvalidArgument);

    // A WRITE at the wrong offset is OutOfRange and writes nothing.
    const rpc = new RpcClient(testChannels.get(s.socket), "containerd.services.content.v1.Content");
    const call = rpc.bidi(ctx, "Write");
    const it = call.responses[Symbol.asyncIterator]();
    await call.send({ action: 0, ref: "bad-offset" });
    assert.equal((await it.next()).value?.offset, 0);
    await call.send({ action: 1, offset: 10, data: Buffer.from("abc") });
    await assert.rejects(it.next(), (e: Error) => /write @10 must occur at current offset 0/.test(e.message));
    assert.equal((await store.status(ctx, "bad-offset")).offset, 0);
    await store.abort(ctx, "bad-offset");
    assert.doesNotMatch((await s.ctr(["content", "active"])).stdout, /bad-/);
  });

  it("a second writer on a locked ref is Unavailable", async () => {
    const ctx = background("default");
    const store = new ContentStoreProxy(testChannels.get(s.socket));
    const w = await store.writer(ctx, { ref: "locked-ref" });
    try {
      await rejectsWith(store.writer(ctx, { ref: "locked-ref" }), ErrorCodes.Unavailable, /ref locked-ref locked/);
    } finally {
      await w.close();
    }
    await waitFor("the lock to be released", async () => {
      try {
        await (await store.writer(ctx, { ref: "locked-ref" })).close();
        return true;
      } catch {
        return undefined;
      }
    }, 5000);
    await store.abort(ctx, "locked-ref");
  });

  describe("content fetch from a registry", () => {
    let reg: Registry;
    let img: BuiltImage;
    before(async () => {
      reg = await startRegistry();
      img = buildBusyboxImage({ otherPlatforms: [{ architecture: "s390x", os: "linux" }] });
      await pushImage(reg, "test/busybox", "latest", img);
    });
    after(async () => {
      await reg?.stop();
    });

    it("ctr content fetch --plain-http stores every blob with containerd's labels", async () => {
      const ref = `${reg.host}/test/busybox:latest`;
      const r = await s.ctr(["content", "fetch", "--plain-http", ref], { namespace: "fetch", timeoutMs: 60000 });
      assert.equal(r.code, 0, r.stderr + r.stdout);
      const want = [img.index!, img.manifest, img.config, img.layer].map((b) => b.descriptor.digest).sort();
      assert.deepEqual(await lsq(s, [], "fetch"), want);
      const labels = async (d: string): Promise<Record<string, string>> => {
        const out = (await s.ctr(["content", "ls", `digest==${d}`], { namespace: "fetch" })).stdout.split("\n")[1] ?? "";
        const field = out.trim().split(/\s+/).pop() ?? "";
        return Object.fromEntries(field.split(",").filter((kv) => kv.includes("=")).map((kv) => [kv.slice(0, kv.indexOf("=")), kv.slice(kv.indexOf("=") + 1)]));
      };
      const source = "containerd.io/distribution.source.127.0.0.1";
      const idx = await labels(img.index!.descriptor.digest);
      assert.equal(idx["containerd.io/gc.ref.content.m.0"], img.manifest.descriptor.digest);
      assert.equal(idx["containerd.io/gc.ref.content.m.1"], img.others![0]!.manifest.descriptor.digest, "every platform's manifest is referenced");
      assert.equal(idx[source], "test/busybox");
      const man = await labels(img.manifest.descriptor.digest);
      assert.equal(man["containerd.io/gc.ref.content.config"], img.config.descriptor.digest);
      assert.equal(man["containerd.io/gc.ref.content.l.0"], img.layer.descriptor.digest);
      assert.equal((await labels(img.layer.descriptor.digest))[source], "test/busybox");
      // The bytes are the registry's bytes.
      const got = await new Promise<Buffer>((resolve, reject) => {
        const c = spawn("ctr", ["-a", s.socket, "-n", "fetch", "content", "get", img.layer.descriptor.digest]);
        const out: Buffer[] = [];
        c.stdout.on("data", (d: Buffer) => out.push(d));
        c.on("error", reject);
        c.on("close", () => resolve(Buffer.concat(out)));
      });
      assert.ok(got.equals(img.layer.data));
      // The image record keeps everything (the fetch lease is gone, garbage collection has run).
      assert.match((await s.ctr(["images", "ls", "-q"], { namespace: "fetch" })).stdout, /test\/busybox:latest/);
      await gcSync("fetch");
      assert.deepEqual(await lsq(s, [], "fetch"), want);
      // Fetching again finds everything present.
      const again = await s.ctr(["content", "fetch", "--plain-http", ref], { namespace: "fetch", timeoutMs: 60000 });
      assert.equal(again.code, 0, again.stderr);
      assert.doesNotMatch((await s.ctr(["content", "active"], { namespace: "fetch" })).stdout, /sha256/);
    });
  });

  it("kill -9 of the content process mid-ingest: the ref resumes at its offset and commits the right digest", async () => {
    await gcSync();
    const size = 256 * 1024 * 1024;
    const file = path.join(tmp, "large.bin");
    const fd = fs.openSync(file, "w");
    const chunk = Buffer.alloc(1 << 20);
    const h = crypto.createHash("sha256");
    for (let i = 0; i < size / chunk.length; i++) {
      crypto.randomFillSync(chunk);
      h.update(chunk);
      fs.writeSync(fd, chunk);
    }
    fs.closeSync(fd);
    const digest = "sha256:" + h.digest("hex");
    const ctx = background("default");
    const store = new ContentStoreProxy(testChannels.get(s.socket));

    const first = ctrFromFile(s, ["content", "ingest", "--expected-digest", digest, "large-ref"], file);
    await waitFor("the ingest to be under way", async () => {
      const st = await store.status(ctx, "large-ref").catch(() => undefined);
      return st && st.offset > 32 * 1024 * 1024 ? st : undefined;
    }, 30000, 20);
    const oldPid = s.kill("content", "SIGKILL");
    const r1 = await first.done;
    assert.notEqual(r1.code, 0, "the interrupted ctr fails");
    await s.waitRestarted("content", oldPid);

    const st = await waitFor("the ref's status", () => store.status(ctx, "large-ref").catch(() => undefined), 10000);
    assert.ok(st.offset > 0 && st.offset < size, `resume point ${st.offset}`);
    // The resumed writer reports the offset and the digest of exactly the bytes before it.
    const w = await store.writer(ctx, { ref: "large-ref", total: size, expected: digest });
    const ws = await w.status();
    assert.equal(ws.offset, st.offset);
    const partial = crypto.createHash("sha256");
    const rfd = fs.openSync(file, "r");
    const buf = Buffer.alloc(1 << 20);
    for (let pos = 0; pos < ws.offset;) {
      const n = fs.readSync(rfd, buf, 0, Math.min(buf.length, ws.offset - pos), pos);
      partial.update(buf.subarray(0, n));
      pos += n;
    }
    fs.closeSync(rfd);
    assert.equal(w.digest(), "sha256:" + partial.digest("hex"));
    await w.close();
    await sleep(50);

    const r2 = await ctrFromFile(s, ["content", "ingest", "--expected-digest", digest, "large-ref"], file).done;
    assert.equal(r2.code, 0, r2.stderr);
    const info = await store.info(ctx, digest);
    assert.equal(info.size, size);
    assert.doesNotMatch((await s.ctr(["content", "active"])).stdout, /large-ref/);
    const blob = path.join(s.root, "content", "blobs", "sha256", digest.slice(7));
    assert.equal(fs.statSync(blob).size, size);
    assert.equal((fs.statSync(blob).mode & 0o777).toString(8), "444");
    assert.equal((await s.ctr(["content", "rm", digest])).code, 0);
    fs.rmSync(file);
  });
});
