/**
 * The CRI ImageService through the gateway's socket, with the real `crictl` (cri-tools v1.26.0 from the
 * conformance kit), against a docker-registry on a free loopback port holding images under the kit's
 * fixture names, reached through the kit's hosts.toml mirrors rewritten to that port: pull (by tag,
 * by digest, with credentials), images, inspecti (RepoTags/RepoDigests with the upstream names, the id
 * as the config digest, uid/username, verbose info), rmi, imagefsinfo, the records `ctr -n k8s.io`
 * sees and the image events on the bus.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { CRI_KIT, startCriStack, type CriStack } from "#test/cri/helpers";
import { buildBusyboxImage, pushImage } from "#test/helpers/image";
import { request, startRegistry, type Registry } from "#test/helpers/registry";
import { EventsWatcher } from "#test/tasks/helpers";
import { startFrontProxy, type FrontProxy } from "#test/transfer/registry";

const ACCEPT = [
  "application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json",
  "application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json",
].join(", ");
const sha256 = (b: Buffer): string => "sha256:" + crypto.createHash("sha256").update(b).digest("hex");

interface CriImage {
  id: string;
  repoTags: string[];
  repoDigests: string[];
  size: string;
  uid: { value: string } | null;
  username: string;
  pinned?: boolean;
}

describe("cri images (crictl against Flotilla's gateway)", { timeout: 300_000 }, () => {
  let reg: Registry;
  let proxy: FrontProxy;
  let proxy2: FrontProxy;
  let stack: CriStack;

  const crictl = (args: string[]): ReturnType<CriStack["crictl"]> => stack.crictl(args);
  const crictlOk = (args: string[]): Promise<string> => stack.crictlOk(args);
  const listImages = async (): Promise<CriImage[]> => (JSON.parse(await crictlOk(["images", "-o", "json"])) as { images: CriImage[] }).images;
  const inspect = async (ref: string): Promise<{ status: CriImage; info?: { chainID: string; imageSpec: Record<string, unknown> } }> =>
    JSON.parse(await crictlOk(["inspecti", "-o", "json", ref]));

  /** The registry's manifest (or index) for repo:tag and the image's config digest, as the fixtures hold them. */
  const fixture = async (repo: string, tag: string): Promise<{ digest: string; configDigest: string; size: number }> => {
    const get = async (ref: string): Promise<Buffer> => {
      const r = await request(`${reg.url}/v2/${repo}/manifests/${ref}`, { headers: { accept: ACCEPT } });
      assert.equal(r.status, 200, `${repo}:${ref}`);
      return r.body;
    };
    const top = await get(tag);
    let m = JSON.parse(top.toString()) as { manifests?: { digest: string; size: number }[]; config?: { digest: string; size: number }; layers?: { size: number }[] };
    let size = 0;
    if (m.manifests) {
      size += top.length;
      const body = await get(m.manifests[0]!.digest);
      size += body.length;
      m = JSON.parse(body.toString());
    } else size += top.length;
    size += m.config!.size + m.layers!.reduce((n, l) => n + l.size, 0);
    return { digest: sha256(top), configDigest: m.config!.digest, size };
  };

  before(async () => {
    reg = await startRegistry();
    // The kit's fixture names with the kit's image configs (images.sh takes minutes on a loaded machine:
    // the same images are built here, on one busybox layer, as critest's image specs need them).
    const base = buildBusyboxImage({ index: false, config: { Cmd: ["sh"] } });
    await pushImage(reg, "library/busybox", "1.28", base);
    await pushImage(reg, "library/busybox", "latest", base);
    const users: [string, string][] = [["uid", "1002"], ["username", "www-data"], ["uid-group", "1003:1004"], ["username-group", "www-data:1004"]];
    for (const [suffix, user] of users) await pushImage(reg, `k8s-staging-cri-tools/test-image-user-${suffix}`, "latest", buildBusyboxImage({ index: false, config: { Cmd: ["sh"], User: user } }));
    const tags = buildBusyboxImage({ index: false, config: { Cmd: ["sh"], Labels: { fixture: "test-image-tags" } } });
    for (const t of ["1", "2", "3"]) await pushImage(reg, "k8s-staging-cri-tools/test-image-tags", t, tags);
    await pushImage(reg, "pause", "3.6", buildBusyboxImage({ index: false, config: { Cmd: ["/pause"], User: "65535" } }));
    // An index, as multi-platform images come.
    await pushImage(reg, "k8s-staging-cri-tools/test-image-digest", "latest", buildBusyboxImage({ config: { Cmd: ["sh"], Labels: { fixture: "test-image-digest" } } }));
    proxy = await startFrontProxy(reg.host, { bearer: { user: "bob", password: "hunter2" } });
    proxy2 = await startFrontProxy(reg.host, { bearer: { user: "carol", password: "s3cret" } });
    // The kit's mirrors, rewritten to this registry; two private registries behind token auth as
    // upstream names of their own: one used with the request's credentials, one with the config's.
    const certs = path.join(reg.dir, "certs.d");
    fs.cpSync(path.join(CRI_KIT, "hosts"), certs, { recursive: true });
    for (const h of fs.readdirSync(certs)) {
      const f = path.join(certs, h, "hosts.toml");
      if (fs.existsSync(f)) fs.writeFileSync(f, fs.readFileSync(f, "utf8").split("127.0.0.1:5001").join(reg.host));
    }
    for (const [name, p] of [["private.example.com", proxy], ["configured.example.com", proxy2]] as const) {
      fs.mkdirSync(path.join(certs, name));
      fs.writeFileSync(path.join(certs, name, "hosts.toml"), `server = "http://${p.host}"\n[host."http://${p.host}"]\n  capabilities = ["pull", "resolve"]\n`);
    }
    stack = await startCriStack({
      registryConfigPath: certs,
      // Credentials of the host asked: behind a mirror, the mirror's (as containerd).
      extraToml: [`[plugins."io.containerd.grpc.v1.cri".registry.configs."${proxy2.host}".auth]`, 'username = "carol"', 'password = "s3cret"'].join("\n"),
    });
  });

  after(async () => {
    await stack?.stop();
    await proxy?.stop();
    await proxy2?.stop();
    await reg?.stop();
  });

  it("pulls by upstream name through the mirror; RepoTags/RepoDigests name the upstream, the id is the config digest", async () => {
    const events = new EventsWatcher(stack, ['topic~="/images/"']);
    try {
      await events.ready();
      const out = await crictlOk(["pull", "busybox:1.28"]);
      const f = await fixture("library/busybox", "1.28");
      assert.equal(out.trim(), `Image is up to date for ${f.configDigest}`);
      const img = (await listImages()).find((i) => i.repoTags.includes("docker.io/library/busybox:1.28"));
      assert.ok(img, "listed");
      assert.equal(img.id, f.configDigest);
      assert.deepEqual(img.repoTags, ["docker.io/library/busybox:1.28"]);
      assert.deepEqual(img.repoDigests, [`docker.io/library/busybox@${f.digest}`]);
      assert.equal(Number(img.size), f.size, "the blobs of this platform: manifest(s), config, layers");
      assert.ok(!JSON.stringify(img).includes(reg.host), "the mirror never shows");

      // The records containerd's CRI makes, in k8s.io: the tag, the id and the repo digest, managed.
      const ls = await stack.ctr(["images", "ls"], { namespace: "k8s.io" });
      const names = ls.stdout.split("\n").slice(1).map((l) => l.split(/\s+/)[0]).filter(Boolean);
      for (const n of ["docker.io/library/busybox:1.28", f.configDigest, `docker.io/library/busybox@${f.digest}`]) assert.ok(names.includes(n), `${n} in\n${ls.stdout}`);
      assert.match(ls.stdout, /io\.cri-containerd\.image=managed/);
      await events.waitFor("the image records' events", (l) => l.filter((e) => e.topic === "/images/create").length >= 3);
      const created = events.lines.filter((e) => e.topic === "/images/create");
      assert.ok(created.every((e) => e.ns === "k8s.io"), JSON.stringify(created));
      assert.deepEqual(created.map((e) => e.json.name).sort(), ["docker.io/library/busybox:1.28", `docker.io/library/busybox@${f.digest}`, f.configDigest].sort());
    } finally {
      events.stop();
    }

    // Pulling again answers the same id and adds nothing.
    assert.equal((await crictlOk(["pull", "docker.io/library/busybox:1.28"])).trim(), `Image is up to date for ${(await fixture("library/busybox", "1.28")).configDigest}`);
    assert.equal((await listImages()).filter((i) => i.repoTags.includes("docker.io/library/busybox:1.28")).length, 1);
  });

  it("inspecti resolves a tag, a short name, an id, a short id and a digest reference; verbose info is containerd's", async () => {
    const f = await fixture("library/busybox", "1.28");
    const hex = f.configDigest.slice("sha256:".length);
    for (const ref of ["busybox:1.28", "docker.io/library/busybox:1.28", f.configDigest, hex.slice(0, 12), `docker.io/library/busybox@${f.digest}`]) {
      const s = await inspect(ref);
      assert.equal(s.status.id, f.configDigest, ref);
    }
    const s = await inspect("busybox:1.28");
    assert.ok(s.info, "verbose info");
    assert.match(s.info.chainID, /^sha256:[0-9a-f]{64}$/);
    assert.ok(Array.isArray((s.info.imageSpec.rootfs as { diff_ids: string[] }).diff_ids));
    assert.deepEqual((s.info.imageSpec.config as { Cmd: string[] }).Cmd, ["sh"]);
    const none = await crictl(["inspecti", "docker.io/library/busybox:0.0-not-there"]);
    assert.notEqual(none.code, 0);
    assert.match(none.stderr, /no such image/);
  });

  it("uid and username come from the image config's User, as containerd reports them", async () => {
    const base = "gcr.io/k8s-staging-cri-tools/test-image-user";
    const want: [string, string | null, string][] = [["uid", "1002", ""], ["username", null, "www-data"], ["uid-group", "1003", ""], ["username-group", null, "www-data"]];
    for (const [suffix] of want) await crictlOk(["pull", `${base}-${suffix}`]);
    for (const [suffix, uid, username] of want) {
      const s = await inspect(`${base}-${suffix}`);
      assert.equal(s.status.uid?.value ?? null, uid, suffix);
      assert.equal(s.status.username, username, suffix);
      assert.deepEqual(s.status.repoTags, [`${base}-${suffix}:latest`]);
    }
  });

  it("one image pulled by three tags is one image with three RepoTags; rmi removes every name and its content", async () => {
    const repo = "gcr.io/k8s-staging-cri-tools/test-image-tags";
    for (const t of ["1", "2", "3"]) await crictlOk(["pull", `${repo}:${t}`]);
    const imgs = (await listImages()).filter((i) => i.repoTags.some((t) => t.startsWith(`${repo}:`)));
    assert.equal(imgs.length, 1);
    assert.deepEqual(imgs[0]!.repoTags, [`${repo}:1`, `${repo}:2`, `${repo}:3`]);
    const id = imgs[0]!.id;
    const configBlob = path.join(stack.root, "content", "blobs", "sha256", id.slice("sha256:".length));
    assert.ok(fs.existsSync(configBlob), configBlob);

    await crictlOk(["rmi", `${repo}:2`]);
    assert.ok(!(await listImages()).some((i) => i.id === id), "every name of the image is gone");
    const ls = await stack.ctr(["images", "ls", "-q"], { namespace: "k8s.io" });
    assert.ok(!ls.stdout.includes(repo) && !ls.stdout.includes(id), ls.stdout);
    assert.equal(fs.existsSync(configBlob), false, "RemoveImage returns after the collection");
    // Gone already: the CRI answers empty, crictl says so.
    const again = await crictl(["rmi", id]);
    assert.notEqual(again.code, 0);
    assert.match(again.stderr, /no such image/);
  });

  it("pulls by digest; a missing image is a clear error", async () => {
    const f = await fixture("k8s-staging-cri-tools/test-image-digest", "latest");
    const ref = `gcr.io/k8s-staging-cri-tools/test-image-digest@${f.digest}`;
    assert.equal((await crictlOk(["pull", ref])).trim(), `Image is up to date for ${f.configDigest}`);
    const s = await inspect(ref);
    assert.deepEqual(s.status.repoTags, []);
    assert.deepEqual(s.status.repoDigests, [ref]);

    const missing = await crictl(["pull", "docker.io/library/not-in-the-registry:1"]);
    assert.notEqual(missing.code, 0);
    // (crictl quotes the status message: its own quotes come escaped)
    assert.match(missing.stderr, /code = NotFound desc = failed to pull and unpack image \\?"docker\.io\/library\/not-in-the-registry:1\\?": failed to resolve reference \\?"docker\.io\/library\/not-in-the-registry:1\\?": docker\.io\/library\/not-in-the-registry:1: not found"/);
    const bad = await crictl(["pull", "Not A Reference"]);
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /code = InvalidArgument desc = failed to parse image reference \\?"Not A Reference\\?"/);
  });

  it("pulls from a registry behind token auth with the request's credentials (--creds, --auth), and not without", async () => {
    const ref = "private.example.com/library/busybox:latest";
    const denied = await crictl(["pull", ref]);
    assert.notEqual(denied.code, 0, denied.stdout);
    assert.match(denied.stderr, /failed to pull and unpack image/);
    assert.equal((await crictl(["pull", "--creds", "bob:wrong", ref])).code === 0, false);

    await crictlOk(["pull", "--creds", "bob:hunter2", ref]);
    assert.ok((await listImages()).some((i) => i.repoTags.includes(ref)));
    await crictlOk(["rmi", ref]);
    await crictlOk(["pull", "--auth", Buffer.from("bob:hunter2").toString("base64"), ref]);
    assert.ok((await listImages()).some((i) => i.repoTags.includes(ref)));
    assert.ok(proxy.tokensIssued >= 2, "tokens were asked for with the credentials");

    // No credentials in the request: the configured ones of the (mirror) host.
    await crictlOk(["pull", "configured.example.com/library/busybox:1.28"]);
    assert.ok((await listImages()).some((i) => i.repoTags.includes("configured.example.com/library/busybox:1.28")));
    assert.ok(proxy2.tokensIssued >= 1);
  });

  it("the configured sandbox image is pinned (containerd 1.7), other images are not", async () => {
    await crictlOk(["pull", "registry.k8s.io/pause:3.6"]);
    const all = await listImages();
    const pause = all.find((i) => i.repoTags.includes("registry.k8s.io/pause:3.6"));
    assert.equal(pause?.pinned, true, JSON.stringify(pause));
    assert.equal(pause?.uid?.value, "65535");
    assert.ok(all.filter((i) => i !== pause).every((i) => !i.pinned), JSON.stringify(all));
    assert.match((await stack.ctr(["images", "ls"], { namespace: "k8s.io" })).stdout, /registry\.k8s\.io\/pause:3\.6 .*io\.cri-containerd\.pinned=pinned/);
  });

  it("a restarted cri process lists the same images (nothing of them lives in the cri process)", async () => {
    const before = (await listImages()).map((i) => `${i.id} ${i.repoTags.join(",")}`).sort();
    assert.ok(before.length >= 3, before.join("\n"));
    const old = stack.kill("cri", "SIGKILL");
    await stack.waitRestarted("cri", old, 60_000);
    assert.deepEqual((await listImages()).map((i) => `${i.id} ${i.repoTags.join(",")}`).sort(), before);
  });

  it("imagefsinfo: the snapshotter's root and what its snapshots use", async () => {
    const fsinfo = JSON.parse(await crictlOk(["imagefsinfo", "-o", "json"])) as { status: { timestamp: string; fsId: { mountpoint: string }; usedBytes: { value: string }; inodesUsed: { value: string } } };
    assert.equal(fsinfo.status.fsId.mountpoint, path.join(stack.root, "snapshots", "overlayfs"));
    assert.ok(Number(fsinfo.status.usedBytes.value) > 0, JSON.stringify(fsinfo));
    assert.ok(Number(fsinfo.status.inodesUsed.value) > 0, JSON.stringify(fsinfo));
    assert.ok(Math.abs(Number(fsinfo.status.timestamp) / 1e6 - Date.now()) < 120_000, "a recent timestamp (ns)");
  });
});
