/**
 * Issue 15, mutual TLS: every process on TCP (listening on 0.0.0.0, dialled at its advertised
 * address) with certificates from `bin/flotilla certs init`. ctr over the gateway's unix socket pulls
 * from a local registry and runs busybox, every hop between processes over TLS; clients without a
 * certificate, with one from another CA or with an expired one are refused by content and by the
 * gateway's TCP listener (a warn line in its log, nothing written); the gateway's extra TCP listener
 * (`[grpc] tcp_address`, tcp_tls_*) serves a client with the client certificate.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import * as grpc from "@grpc/grpc-js";
import { freePort } from "#cli/supervisor";
import { SERVICE_NAMES } from "#libs/config";
import { decode, encode } from "#libs/proto";
import { startStack, runCommand, waitFor, type Stack } from "../harness";
import { flotillaOk } from "../helpers/flotilla";
import { buildBusyboxImage, pushImage } from "../helpers/image";
import { sha256, startRegistry, type Registry } from "../helpers/registry";

const identity = (b: Buffer): Buffer => b;

/** A certificate signed by `caDir`'s CA whose validity ended in 2020 (`openssl ca` takes explicit dates). */
async function expiredCert(caDir: string): Promise<{ cert: Buffer; key: Buffer }> {
  const d = fs.mkdtempSync(path.join(caDir, "expired-"));
  fs.writeFileSync(path.join(d, "index.txt"), "");
  fs.writeFileSync(path.join(d, "serial"), "1000\n");
  fs.writeFileSync(path.join(d, "ca.cnf"), [
    "[ca]", "default_ca = c", "[c]", `database = ${d}/index.txt`, `new_certs_dir = ${d}`, `serial = ${d}/serial`,
    "default_md = sha256", "policy = p", "[p]", "commonName = supplied", "",
  ].join("\n"));
  const run = async (args: string[]): Promise<void> => {
    const r = await runCommand("openssl", args);
    assert.equal(r.code, 0, r.stderr);
  };
  await run(["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", `${d}/key.pem`, "-out", `${d}/req.csr`, "-subj", "/CN=expired-client"]);
  await run(["ca", "-batch", "-config", `${d}/ca.cnf`, "-cert", `${caDir}/ca.pem`, "-keyfile", `${caDir}/ca-key.pem`, "-in", `${d}/req.csr`, "-out", `${d}/cert.pem`,
    "-startdate", "20200101000000Z", "-enddate", "20200102000000Z", "-notext"]);
  return { cert: fs.readFileSync(`${d}/cert.pem`), key: fs.readFileSync(`${d}/key.pem`) };
}

/** Commit `data` into content over its TCP port with these credentials: the error, or undefined if written. */
function writeBlob(target: string, creds: grpc.ChannelCredentials, data: Buffer): Promise<grpc.ServiceError | undefined> {
  const c = new grpc.Client(target, creds);
  const md = new grpc.Metadata();
  md.set("containerd-namespace", "default");
  return new Promise((resolve) => {
    const call = c.makeBidiStreamRequest("/containerd.services.content.v1.Content/Write", identity, identity, md, { deadline: Date.now() + 10000 });
    let err: grpc.ServiceError | undefined;
    call.on("data", () => undefined);
    call.on("error", (e: grpc.ServiceError) => (err = e));
    call.on("close", () => {
      c.close();
      resolve(err);
    });
    call.on("status", () => undefined);
    const digest = sha256(data);
    call.write(encode("containerd.services.content.v1.WriteContentRequest", { action: 2, ref: `tls-${digest}`, total: data.length, expected: digest, data, offset: 0 }));
    call.end();
  });
}

function versionCall(target: string, creds: grpc.ChannelCredentials): Promise<{ err?: grpc.ServiceError; version?: string }> {
  const c = new grpc.Client(target, creds);
  return new Promise((resolve) => {
    c.makeUnaryRequest("/containerd.services.version.v1.Version/Version", identity, identity, Buffer.alloc(0), new grpc.Metadata(), { deadline: Date.now() + 10000 }, (err, res) => {
      c.close();
      resolve(err ? { err } : { version: String(decode("containerd.services.version.v1.VersionResponse", res!).version) });
    });
  });
}

describe("mutual TLS between processes (issue 15)", () => {
  let stack: Stack;
  let reg: Registry;
  let dir: string;
  let certs: string;
  let other: string;
  const ports = {} as Record<string, number>;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "flt-tls-"));
    certs = path.join(dir, "certs");
    other = path.join(dir, "other");
    const init = await flotillaOk(["certs", "init", certs]);
    assert.match(init.stdout, /\[flotilla\.tls\]/);
    await flotillaOk(["certs", "init", other]);
    for (const s of [...SERVICE_NAMES, "gatewayTcp"]) ports[s] = await freePort();
    const f = (n: string): string => JSON.stringify(path.join(certs, n));
    const toml = [`[flotilla.tls]`, `ca = ${f("ca.pem")}`, `cert = ${f("client.pem")}`, `key = ${f("client-key.pem")}`];
    for (const s of SERVICE_NAMES) {
      if (s === "gateway") {
        toml.push(`[flotilla.services.gateway]`, `tls_cert = ${f("gateway.pem")}`, `tls_key = ${f("gateway-key.pem")}`);
        continue;
      }
      toml.push(`[flotilla.services.${s}]`, `address = "tcp://0.0.0.0:${ports[s]}"`, `tls_cert = ${f(`${s}.pem`)}`, `tls_key = ${f(`${s}-key.pem`)}`);
      // images is dialled at an explicit advertised name (in its certificate); the rest at 127.0.0.1.
      if (s === "images") toml.push(`advertise_address = "localhost:${ports[s]}"`);
    }
    stack = await startStack({
      extraToml: toml.join("\n"),
      grpcToml: [`tcp_address = "127.0.0.1:${ports.gatewayTcp}"`, `tcp_tls_ca = ${f("ca.pem")}`, `tcp_tls_cert = ${f("gateway.pem")}`, `tcp_tls_key = ${f("gateway-key.pem")}`],
    });
    reg = await startRegistry();
    await pushImage(reg, "test/busybox", "latest", buildBusyboxImage({ applets: ["sh", "echo"] }));
  });

  after(async () => {
    await stack?.stop();
    await reg?.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  test("certs init: a CA and a certificate per process and the client, keys 0600, SANs and both usages", async () => {
    for (const n of ["ca", ...SERVICE_NAMES, "client"]) {
      assert.ok(fs.existsSync(path.join(certs, `${n}.pem`)), n);
      assert.equal(fs.statSync(path.join(certs, `${n}-key.pem`)).mode & 0o777, 0o600, `${n}-key.pem`);
    }
    const r = await runCommand("openssl", ["x509", "-in", path.join(certs, "content.pem"), "-noout", "-text"]);
    assert.match(r.stdout, /DNS:localhost, IP Address:127\.0\.0\.1/);
    assert.match(r.stdout, /TLS Web Server Authentication, TLS Web Client Authentication/);
    const v = await runCommand("openssl", ["verify", "-CAfile", path.join(certs, "ca.pem"), path.join(certs, "tasks.pem")]);
    assert.equal(v.code, 0, v.stderr);
  });

  test("every service listens with TLS on TCP: a plain HTTP/2 client gets nowhere", async () => {
    for (const s of SERVICE_NAMES.filter((n) => n !== "gateway")) {
      const r = await versionCall(`127.0.0.1:${ports[s]}`, grpc.credentials.createInsecure());
      assert.equal(r.err?.code, grpc.status.UNAVAILABLE, `${s}: ${r.err?.message}`);
    }
  });

  test("ctr over the gateway's unix socket pulls from a local registry and runs busybox, the processes talking mTLS", async () => {
    const ref = `${reg.host}/test/busybox:latest`;
    const p = await stack.ctr(["images", "pull", "--plain-http", ref], { timeoutMs: 120000 });
    assert.equal(p.code, 0, p.stderr);
    const r = await stack.ctr(["run", "--rm", ref, "tls-run", "sh", "-c", "echo over-tls; exit 3"], { timeoutMs: 60000 });
    assert.equal(r.stdout.trim(), "over-tls", r.stderr);
    assert.equal(r.code, 3);
  });

  test("content and the gateway's TCP listener refuse a client with no certificate, another CA's or an expired one; nothing is written; one warn line each", async () => {
    const ca = fs.readFileSync(path.join(certs, "ca.pem"));
    const expired = await expiredCert(certs);
    const cases: [string, grpc.ChannelCredentials, RegExp][] = [
      ["no certificate", grpc.credentials.createSsl(ca), /no client certificate/],
      ["another CA", grpc.credentials.createSsl(ca, fs.readFileSync(path.join(other, "client-key.pem")), fs.readFileSync(path.join(other, "client.pem"))), /not signed by the configured CA/],
      ["expired", grpc.credentials.createSsl(ca, expired.key, expired.cert), /expired/],
    ];
    for (const [target, what, creds, reason] of [`127.0.0.1:${ports.content}`, `127.0.0.1:${ports.gatewayTcp}`].flatMap((t) => cases.map(([w, c, r]) => [t, w, c, r] as const))) {
      const data = Buffer.from(`refused blob: ${what} at ${target} ${Date.now()}`);
      const before = stack.logs().split("\n").filter((l) => l.includes("TLS handshake refused")).length;
      const err = await writeBlob(target, creds, data);
      assert.ok(err, `${what}: the write was refused`);
      assert.equal(err.code, grpc.status.UNAVAILABLE, `${what}: ${err.message}`);
      const lines = await waitFor(`the warn line for ${what}`, () => {
        const l = stack.logs().split("\n").filter((x) => x.includes("TLS handshake refused"));
        return l.length > before ? l.slice(before) : undefined;
      });
      const entry = JSON.parse(lines[0]!.slice(lines[0]!.indexOf("{")));
      assert.match(entry.reason, reason, `${what}: ${lines[0]}`);
      assert.equal(entry.level, 40, "warn");
      assert.match(entry.peer, /^127\.0\.0\.1:\d+$/);
      const ls = await stack.ctr(["content", "ls"]);
      assert.equal(ls.code, 0, ls.stderr);
      assert.ok(!ls.stdout.includes(sha256(data)), `${what}: nothing written`);
    }
    // The same write with the client certificate goes through (the refusals were the certificates).
    const good = Buffer.from(`accepted blob ${Date.now()}`);
    const ok = grpc.credentials.createSsl(ca, fs.readFileSync(path.join(certs, "client-key.pem")), fs.readFileSync(path.join(certs, "client.pem")));
    assert.equal((await writeBlob(`127.0.0.1:${ports.content}`, ok, good))?.message, undefined);
    assert.ok((await stack.ctr(["content", "ls"])).stdout.includes(sha256(good)));
  });

  test("the gateway's TCP listener ([grpc] tcp_address with tcp_tls_*) serves a client with the client certificate only", async () => {
    const ca = fs.readFileSync(path.join(certs, "ca.pem"));
    const target = `127.0.0.1:${ports.gatewayTcp}`;
    const ok = await versionCall(target, grpc.credentials.createSsl(ca, fs.readFileSync(path.join(certs, "client-key.pem")), fs.readFileSync(path.join(certs, "client.pem"))));
    assert.match(ok.version ?? "", /flotilla/, ok.err?.message);
    const refused = await versionCall(target, grpc.credentials.createSsl(ca));
    assert.equal(refused.err?.code, grpc.status.UNAVAILABLE);
    // The unix socket stays.
    assert.equal((await stack.ctr(["version"])).code, 0);
  });
});
