/**
 * `flotilla images ...` as a new user would run it: pull, tag, export/rm/import round trip, push to an
 * htpasswd registry (checked with skopeo) and back by digest, bearer-token auth over the auth stream,
 * a docker-save archive, and bad input failing cleanly.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import * as zlib from "node:zlib";
import { background } from "#libs/context";
import { RpcClient } from "#libs/grpc/client";
import { TRANSFER_SERVICE, imageStoreAny, openStream } from "#libs/clients/transfer";
import { sha256 } from "#libs/oci";
import { startStack, waitFor, type Stack, testChannels } from "../harness";
import { flotilla, spawnFlotilla, type FlotillaResult } from "../helpers/flotilla";
import { buildImage, busyboxLayer, dataLayer, pushImage, type BuiltImage } from "./images";
import { startFrontProxy, startRegistry, type FrontProxy, type TestRegistry } from "./registry";
import { TAR_END, tarFile } from "#services/transfer/src/local/tar";

/** `bin/flotilla images SUB -a SOCK ARGS...` (fails after 120 s rather than hang). */
function flt(stack: Stack, args: string[], env: NodeJS.ProcessEnv = {}): Promise<FlotillaResult> {
  return flotilla(["images", args[0]!, "-a", stack.socket, ...args.slice(1)], { env, timeoutMs: 120_000 });
}

const ok = (r: { code: number; stdout: string; stderr: string }): void => assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);

/** A `docker save` (pre-OCI) archive: <id>.json config, <id>/layer.tar, manifest.json, repositories. */
function dockerSave(tars: Buffer[], tag: string): Buffer {
  const diffIds = tars.map((t) => sha256(t));
  const config = Buffer.from(JSON.stringify({ architecture: "amd64", os: "linux", config: { Cmd: ["/bin/sh"] }, rootfs: { type: "layers", diff_ids: diffIds } }));
  const cfgName = `${sha256(config).slice(7)}.json`;
  const parts: Buffer[] = [];
  const layers: string[] = [];
  tars.forEach((t, i) => {
    const id = sha256(`layer${i}`).slice(7);
    parts.push(tarFile(`${id}/VERSION`, Buffer.from("1.0")), tarFile(`${id}/json`, Buffer.from("{}")), tarFile(`${id}/layer.tar`, t));
    layers.push(`${id}/layer.tar`);
  });
  parts.push(tarFile(cfgName, config));
  parts.push(tarFile("manifest.json", Buffer.from(JSON.stringify([{ Config: cfgName, RepoTags: [tag], Layers: layers }]))));
  parts.push(tarFile("repositories", Buffer.from("{}")), TAR_END);
  return Buffer.concat(parts);
}

describe("transfer - cli", () => {
  let stack: Stack;
  let reg: TestRegistry;
  let authReg: TestRegistry;
  let bearer: FrontProxy;
  let img: BuiltImage;
  let ref: string;

  before(async () => {
    [stack, reg, authReg] = await Promise.all([startStack(), startRegistry(), startRegistry({ user: "alice", password: "s3cret" })]);
    bearer = await startFrontProxy(reg.host, { bearer: { user: "bob", password: "hunter2" } });
    img = buildImage([busyboxLayer(), dataLayer("data", 10, 2048)]);
    ref = await pushImage(reg.host, "test/busybox", "1.0", img);
  });
  after(async () => {
    await stack?.stop();
    await Promise.all([reg?.stop(), authReg?.stop(), bearer?.stop()]);
  });

  it("pull prints plain progress lines and ctr sees an unpacked image", async () => {
    const r = await flt(stack, ["pull", ref]);
    ok(r);
    assert.match(r.stdout, /^Resolving from OCIRegistry\(/m);
    assert.match(r.stdout, /layer-sha256:[0-9a-f]{12}: complete/);
    assert.match(r.stdout, /extracted/);
    assert.match(r.stdout, /^Completed pull from /m);
    const check = await stack.ctr(["images", "check"]);
    assert.match(check.stdout, new RegExp(`${ref.replace(/\./g, "\\.")}.*complete \\(3/3\\).*true`));
  });

  it("tag, export, rm and import round trip", async () => {
    ok(await flt(stack, ["tag", ref, "local/copy:1"]));
    const again = await flt(stack, ["tag", ref, "local/copy:1"]);
    assert.notEqual(again.code, 0);
    assert.match(again.stderr, /already exists/);
    ok(await flt(stack, ["tag", "--force", ref, "local/copy:1"]));
    const out = path.join(stack.dir, "out.tar");
    ok(await flt(stack, ["export", out, ref, "local/copy:1"]));
    const list = spawnSync("tar", ["tf", out], { encoding: "utf8" }).stdout.split("\n");
    for (const f of ["index.json", "manifest.json", "oci-layout", `blobs/sha256/${img.manifest.desc.digest.slice(7)}`, `blobs/sha256/${img.layers[0]!.desc.digest.slice(7)}`]) assert.ok(list.includes(f), f);
    ok(await stack.ctr(["images", "rm", "--sync", ref, "local/copy:1"]));
    assert.equal((await stack.ctr(["images", "ls", "-q"])).stdout.trim(), "");
    const imp = await flt(stack, ["import", out]);
    ok(imp);
    const ls = await stack.ctr(["images", "ls"]);
    assert.match(ls.stdout, new RegExp(`${ref.replace(/\./g, "\\.")}\\s+\\S+\\s+${img.manifest.desc.digest}`));
    assert.match(ls.stdout, new RegExp(`local/copy:1\\s+\\S+\\s+${img.manifest.desc.digest}`));
    const check = await stack.ctr(["images", "check"]);
    assert.equal((check.stdout.match(/complete \(3\/3\)/g) ?? []).length, 2, check.stdout);
    // a gzip-compressed archive is recognised, and --base-name names images without a full name
    const gz = path.join(stack.dir, "out.tar.gz");
    fs.writeFileSync(gz, zlib.gzipSync(fs.readFileSync(out)));
    ok(await flt(stack, ["import", "--index-name", "archive/index:1", gz]));
    assert.match((await stack.ctr(["images", "ls", "-q"])).stdout, /^archive\/index:1$/m);
    // export to stdout, import from stdin
    const piped = path.join(stack.dir, "piped.tar");
    const code = await new Promise<number>((resolve) => {
      const fd = fs.openSync(piped, "w");
      const c = spawnFlotilla(["images", "export", "-a", stack.socket, "-", "local/copy:1"], { stdio: ["ignore", fd, "pipe"] });
      c.on("close", (x) => {
        fs.closeSync(fd);
        resolve(x ?? 1);
      });
    });
    assert.equal(code, 0);
    ok(await stack.ctr(["images", "rm", "local/copy:1"]));
    const code2 = await new Promise<number>((resolve) => {
      const fd = fs.openSync(piped, "r");
      const c = spawnFlotilla(["images", "import", "-a", stack.socket, "-"], { stdio: [fd, "ignore", "inherit"] });
      c.on("close", (x) => {
        fs.closeSync(fd);
        resolve(x ?? 1);
      });
    });
    assert.equal(code2, 0);
    assert.match((await stack.ctr(["images", "ls", "-q"])).stdout, /^local\/copy:1$/m);
  });

  it("push to an htpasswd registry, skopeo sees it, a second push skips blobs, pull back by digest", async () => {
    const target = `${authReg.host}/team/pushed:v1`;
    const denied = await flt(stack, ["push", target, ref]);
    assert.notEqual(denied.code, 0);
    assert.match(denied.stderr, /unauthorized|unauthenticated/);
    const r = await flt(stack, ["push", "-u", "alice:s3cret", target, ref]);
    ok(r);
    assert.match(r.stdout, /pushed content/);
    const sk = spawnSync("skopeo", ["inspect", "--tls-verify=false", "--creds", "alice:s3cret", `docker://${target}`], { encoding: "utf8" });
    assert.equal(sk.status, 0, sk.stderr);
    const info = JSON.parse(sk.stdout) as { Digest: string; Layers: string[]; Architecture: string };
    assert.equal(info.Digest, img.manifest.desc.digest);
    assert.deepEqual(info.Layers, img.layers.map((l) => l.desc.digest));
    const second = await flt(stack, ["push", "-u", "alice:s3cret", target, ref]);
    ok(second);
    assert.equal((second.stdout.match(/already exists/g) ?? []).length, 3, second.stdout);
    const byDigest = `${authReg.host}/team/pushed@${info.Digest}`;
    ok(await flt(stack, ["pull", "-u", "alice:s3cret", byDigest]));
    assert.match((await stack.ctr(["images", "ls", "-q"])).stdout, new RegExp(byDigest.replace(/\./g, "\\.")));
  });

  it("bearer tokens: credentials asked over the auth stream", async () => {
    const target = `${bearer.host}/test/busybox:1.0`;
    const denied = await flt(stack, ["pull", target]);
    assert.notEqual(denied.code, 0);
    const before = bearer.tokensIssued;
    const dbg = await flt(stack, ["pull", "--http-debug", "-u", "bob:hunter2", target]);
    ok(dbg);
    assert.ok(bearer.tokensIssued > before);
    assert.match(dbg.stderr, /GET http:\/\/127\.0\.0\.1:\d+\/token -> 200/, dbg.stderr);
    assert.match(dbg.stderr, /HEAD http:\/\/127\.0\.0\.1:\d+\/v2\/test\/busybox\/manifests\/1\.0 -> 200/, dbg.stderr);
    bearer.log.length = 0;
    ok(await flt(stack, ["push", "-u", "bob:hunter2", `${bearer.host}/test/copy:2`, ref]));
    // the layers were mounted from test/busybox (distribution source labels), not uploaded again
    assert.ok(bearer.log.some((l) => /^POST \/v2\/test\/copy\/blobs\/uploads\/\?mount=sha256/.test(l)), bearer.log.join("\n"));
    assert.ok(!bearer.log.some((l) => /^PUT \/v2\/test\/copy\/blobs\/uploads/.test(l)), bearer.log.join("\n"));
    const sk = spawnSync("skopeo", ["inspect", "--tls-verify=false", "--creds", "bob:hunter2", `docker://${reg.host}/test/copy:2`], { encoding: "utf8" });
    assert.equal(sk.status, 0, sk.stderr);
  });

  it("a docker save archive imports, unpacks (and runs when tasks are served)", async () => {
    const file = path.join(stack.dir, "dsave.tar");
    fs.writeFileSync(file, dockerSave([busyboxLayer(), dataLayer("extra", 2, 100, "from docker save\n")], "dsave:latest"));
    const r = await flt(stack, ["import", file]);
    ok(r);
    const check = await stack.ctr(["images", "check"]);
    assert.match(check.stdout, /docker\.io\/library\/dsave:latest\s+application\/vnd\.docker\.distribution\.manifest\.v2\+json.*complete \(3\/3\).*true/);
    // --compress stores the layers gzip-compressed
    const zfile = path.join(stack.dir, "dsave2.tar");
    fs.writeFileSync(zfile, dockerSave([busyboxLayer(), dataLayer("extra", 2, 100, "from docker save\n")], "dsave:gz"));
    ok(await flt(stack, ["import", "--compress", zfile]));
    const ls = await stack.ctr(["images", "check"]);
    assert.match(ls.stdout, /docker\.io\/library\/dsave:gz.*complete \(3\/3\).*true/, ls.stdout);
    const target = /docker\.io\/library\/dsave:gz\s+\S+\s+(sha256:[0-9a-f]{64})/.exec(ls.stdout)![1]!;
    const manifest = JSON.parse((await stack.ctr(["content", "get", target])).stdout) as { layers: { mediaType: string }[] };
    assert.deepEqual(manifest.layers.map((l) => l.mediaType), ["application/vnd.docker.image.rootfs.diff.tar.gzip", "application/vnd.docker.image.rootfs.diff.tar.gzip"]);
    const plugins = await stack.ctr(["plugins", "ls"]);
    if (/io\.containerd\.grpc\.v1\s+tasks\s+\S+\s+ok/.test(plugins.stdout)) {
      const run = await stack.ctr(["run", "--rm", "docker.io/library/dsave:latest", "dsave-run", "/bin/cat", "/etc/extra.txt"]);
      assert.equal(run.code, 0, run.stderr);
      assert.equal(run.stdout.trim(), "from docker save");
    }
  });

  it("bad input fails cleanly", async () => {
    // unknown type URL: Unimplemented with containerd's message
    const rpc = new RpcClient(testChannels.get(stack.socket), TRANSFER_SERVICE);
    await assert.rejects(
      rpc.unary(background("default"), "Transfer", { source: { type_url: "example.com/Nope", value: Buffer.alloc(0) }, destination: imageStoreAny({ name: "x" }) }),
      (e: Error & { code?: string }) => e.code === "not implemented" && e.message.includes("method Transfer not implemented for example.com/Nope to containerd.types.transfer.ImageStore"),
    );
    // streams: a duplicate id is AlreadyExists, an unknown one NotFound
    const s1 = await openStream(background("default"), testChannels.get(stack.socket), "dup-stream");
    await assert.rejects(openStream(background("default"), testChannels.get(stack.socket), "dup-stream"), (e: Error & { code?: string }) => e.code === "already exists");
    await s1.close();
    await assert.rejects(
      rpc.unary(background("default"), "Transfer", { source: imageStoreAny({ name: "x" }), destination: imageStoreAny({ name: "y" }), options: { progress_stream: "no-such-stream" } }),
      (e: Error & { code?: string }) => e.code === "not found",
    );
    const before = (await stack.ctr(["images", "ls", "-q"])).stdout;
    const missing = await flt(stack, ["pull", `${reg.host}/test/busybox:nope`]);
    assert.notEqual(missing.code, 0);
    assert.match(missing.stderr, /not found/);
    // a registry answering garbage blobs: digest mismatch, no image, no lease, no ingest left
    await pushImage(reg.host, "test/fresh", "1", buildImage([dataLayer("fresh", 3, 5000)]));
    const garbage = await startFrontProxy(reg.host);
    try {
      garbage.faults.garbageBlobs = true;
      const g = await flt(stack, ["pull", `${garbage.host}/test/fresh:1`]);
      assert.notEqual(g.code, 0);
      assert.match(g.stderr, /digest|precondition/);
      // garbage layers only: the unpack has started (config read, extraction snapshot prepared early)
      await pushImage(reg.host, "test/fresh2", "1", buildImage([dataLayer("fresh2", 3, 5000)]));
      garbage.faults = { garbageBlobsOver: 2048 };
      const g2 = await flt(stack, ["pull", `${garbage.host}/test/fresh2:1`]);
      assert.notEqual(g2.code, 0);
      assert.match(g2.stderr, /digest|precondition/);
    } finally {
      await garbage.stop();
    }
    const snaps = (await stack.ctr(["snapshots", "ls"])).stdout;
    assert.ok(!snaps.includes("extract-"), snaps);
    assert.equal((await stack.ctr(["images", "ls", "-q"])).stdout, before);
    assert.equal((await stack.ctr(["leases", "ls", "-q"])).stdout.trim(), "");
    // A failed pull's ingests are aborted as it unwinds, which may finish just after the CLI has exited.
    await waitFor("no ingest left by the failed pulls", async () => ((await stack.ctr(["content", "active"])).stdout.split("\n").filter((l) => l.includes("sha256")).length === 0 ? true : undefined), 10000);
    // not an archive
    const bad = path.join(stack.dir, "bad.tar");
    fs.writeFileSync(bad, Buffer.alloc(4096, 7));
    const imp = await flt(stack, ["import", bad]);
    assert.notEqual(imp.code, 0);
    assert.match(imp.stderr, /invalid image archive/);
  });
});
