/** The OCI distribution client against a real docker-registry, directly and through a fault-injecting proxy. */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { createHash } from "node:crypto";
import { RegistryClient, RegistryError, parseChallenges, normalizeReference, formatReference, configureHosts } from "#libs/registry";
import { buildImage, busyboxLayer, dataLayer, pushImage, type BuiltImage } from "./images";
import { startFrontProxy, startRegistry, type FrontProxy, type TestRegistry } from "./registry";

async function digestOf(s: AsyncIterable<Buffer>): Promise<string> {
  const h = createHash("sha256");
  for await (const c of s) h.update(c);
  return "sha256:" + h.digest("hex");
}

describe("registry - client", () => {
  let reg: TestRegistry;
  let authReg: TestRegistry;
  let proxy: FrontProxy;
  let bearer: FrontProxy;
  let img: BuiltImage;
  const fast = { attempts: 4, baseMs: 20, maxMs: 100 };

  before(async () => {
    [reg, authReg] = await Promise.all([startRegistry(), startRegistry({ user: "alice", password: "pw" })]);
    [proxy, bearer] = await Promise.all([startFrontProxy(reg.host), startFrontProxy(reg.host, { bearer: { user: "bob", password: "pw2", anonymousPull: true } })]);
    img = buildImage([busyboxLayer(), dataLayer("big", 4, 256 * 1024)], { gzip: true });
    await pushImage(reg.host, "t/img", "v1", img);
    await pushImage(authReg.host, "t/img", "v1", img, async () => ({ type: "credentials", username: "alice", secret: "pw" }));
  });
  after(async () => {
    await Promise.all([reg?.stop(), authReg?.stop(), proxy?.stop(), bearer?.stop()]);
  });

  it("references normalise like docker's", () => {
    assert.equal(formatReference(normalizeReference("busybox")), "docker.io/library/busybox:latest");
    assert.equal(formatReference(normalizeReference("me/app:1")), "docker.io/me/app:1");
    assert.equal(formatReference(normalizeReference("127.0.0.1:5000/a/b@sha256:" + "a".repeat(64))), "127.0.0.1:5000/a/b@sha256:" + "a".repeat(64));
    assert.deepEqual(parseChallenges(['Bearer realm="https://auth.example/token",service="reg",scope="repository:a:pull"']), [
      { scheme: "bearer", params: { realm: "https://auth.example/token", service: "reg", scope: "repository:a:pull" } },
    ]);
    assert.equal(configureHosts("127.0.0.1:5000")[0]!.scheme, "http");
    assert.equal(configureHosts("example.com")[0]!.scheme, "https");
    assert.equal(configureHosts("docker.io")[0]!.host, "registry-1.docker.io");
  });

  it("resolves and fetches anonymously", async () => {
    const c = new RegistryClient({ reference: `${reg.host}/t/img:v1`, retry: fast });
    const { desc } = await c.resolve();
    assert.deepEqual(desc, { mediaType: img.manifest.desc.mediaType, digest: img.manifest.desc.digest, size: img.manifest.desc.size });
    assert.deepEqual(await c.fetchBytes(img.config.desc), img.config.bytes);
    assert.equal(await digestOf(c.fetch(img.layers[1]!.desc)), img.layers[1]!.desc.digest);
    await assert.rejects(new RegistryClient({ reference: `${reg.host}/t/img:nope` }).resolve(), (e: RegistryError) => e.kind === "not-found");
  });

  it("basic auth: credentials asked once per host", async () => {
    let asked = 0;
    const c = new RegistryClient({ reference: `${authReg.host}/t/img:v1`, credentials: async (r) => {
      asked++;
      assert.equal(r.host, authReg.host);
      assert.ok(r.wwwAuthenticate.some((w) => /^Basic/i.test(w)));
      return { type: "credentials", username: "alice", secret: "pw" };
    } });
    await c.resolve();
    await c.fetchBytes(img.config.desc);
    assert.equal(asked, 1);
    await assert.rejects(new RegistryClient({ reference: `${authReg.host}/t/img:v1` }).resolve(), (e: RegistryError) => e.kind === "unauthorized");
    await assert.rejects(new RegistryClient({ reference: `${authReg.host}/t/img:v1`, credentials: async () => ({ type: "credentials", username: "alice", secret: "wrong" }) }).resolve(), (e: RegistryError) => e.kind === "unauthorized");
  });

  it("bearer tokens: anonymous pull token, push token with credentials, tokens reused", async () => {
    const c = new RegistryClient({ reference: `${bearer.host}/t/img:v1` });
    await c.resolve();
    await c.fetchBytes(img.config.desc);
    await c.fetchBytes(img.manifest.desc);
    assert.equal(bearer.tokensIssued, 1);
    await assert.rejects(c.pushManifest(img.manifest.desc, img.manifest.bytes, "v2"), (e: RegistryError) => e.kind === "unauthorized");
    const p = new RegistryClient({ reference: `${bearer.host}/t/img:v2`, credentials: async () => ({ type: "credentials", username: "bob", secret: "pw2" }) });
    await p.pushManifest(img.manifest.desc, img.manifest.bytes, "v2");
    assert.equal((await new RegistryClient({ reference: `${reg.host}/t/img:v2` }).resolve()).desc.digest, img.manifest.desc.digest);
  });

  it("follows redirects and retries 503 with backoff", async () => {
    proxy.faults = { redirectBlobs: true, unavailable: 2 };
    proxy.log.length = 0;
    const c = new RegistryClient({ reference: `${proxy.host}/t/img:v1`, retry: fast });
    await c.resolve();
    assert.deepEqual(await c.fetchBytes(img.config.desc), img.config.bytes);
    assert.ok(proxy.log.some((l) => l.startsWith("GET /redirected/v2/t/img/blobs/")), proxy.log.join("\n"));
    proxy.faults = { unavailable: 10 };
    await assert.rejects(new RegistryClient({ reference: `${proxy.host}/t/img:v1`, retry: fast }).resolve());
    proxy.faults = {};
  });

  it("resumes a broken blob download with a Range request", async () => {
    const layer = img.layers[1]!;
    assert.ok(layer.desc.size > 300_000);
    proxy.faults = { cutBlobAfter: { bytes: 100_000, times: 2 } };
    proxy.log.length = 0;
    const c = new RegistryClient({ reference: `${proxy.host}/t/img:v1`, retry: fast });
    // chunks(): what fetch() streams, as the pull reads it
    assert.equal(await digestOf(c.chunks(layer.desc)), layer.desc.digest);
    const gets = proxy.log.filter((l) => l.includes(layer.desc.digest));
    assert.equal(gets.length, 3, gets.join("\n"));
    const r1 = Number(/range=bytes=(\d+)-/.exec(gets[1]!)?.[1]);
    const r2 = Number(/range=bytes=(\d+)-/.exec(gets[2]!)?.[1]);
    assert.ok(r1 > 0 && r1 <= 100_000 && r2 > r1 && r2 <= r1 + 100_000, gets.join("\n"));
    proxy.faults = {};
  });

  it("detects garbage content", async () => {
    proxy.faults = { garbageBlobs: true };
    const c = new RegistryClient({ reference: `${proxy.host}/t/img:v1`, retry: fast });
    await assert.rejects(c.fetchBytes(img.config.desc), (e: RegistryError) => e.kind === "invalid" && /does not match/.test(e.message));
    proxy.faults = {};
  });

  it("hosts.toml: a dead mirror falls back to the server", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "flt-hosts-"));
    try {
      fs.mkdirSync(path.join(dir, "registry.example:5000"));
      fs.writeFileSync(path.join(dir, "registry.example:5000", "hosts.toml"), [
        `server = "http://${reg.host}"`,
        `[host."http://127.0.0.1:1"]`,
        `  capabilities = ["pull", "resolve"]`,
        `  [host."http://127.0.0.1:1".header]`,
        `    x-test = "1"`,
      ].join("\n"));
      const hosts = configureHosts("registry.example:5000", { hostDir: dir });
      assert.deepEqual(hosts.map((h) => `${h.scheme}://${h.host}${h.path}`), ["http://127.0.0.1:1/v2", `http://${reg.host}/v2`]);
      assert.equal(hosts[0]!.headers["x-test"], "1");
      const c = new RegistryClient({ reference: "registry.example:5000/t/img:v1", hostDir: dir, retry: { attempts: 2, baseMs: 10, maxMs: 20 } });
      const { desc } = await c.resolve();
      assert.equal(desc.digest, img.manifest.desc.digest);
      assert.deepEqual(await c.fetchBytes(img.config.desc), img.config.bytes);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
