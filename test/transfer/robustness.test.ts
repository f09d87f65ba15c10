/**
 * Transfer robustness on the whole stack: kill -9 of the transfer process mid-pull (the next pull
 * resumes the partial ingest with a Range request, `ctr images check` is clean and garbage collection
 * leaves no orphans), and concurrent pulls of images sharing a layer (downloaded once).
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { background } from "#libs/context";
import { TransferClient } from "#libs/clients/transfer";
import { hostPlatform } from "#libs/oci";
import { startStack, waitFor, type Stack, testChannels } from "../harness";
import { spawnFlotilla } from "../helpers/flotilla";
import { buildImage, busyboxLayer, dataLayer, pushImage, type BuiltImage } from "./images";
import { startFrontProxy, startRegistry, type FrontProxy, type TestRegistry } from "./registry";


describe("transfer - robustness", () => {
  let stack: Stack;
  let reg: TestRegistry;
  let proxy: FrontProxy;
  let big: BuiltImage;

  before(async () => {
    [stack, reg] = await Promise.all([startStack(), startRegistry()]);
    proxy = await startFrontProxy(reg.host);
    big = buildImage([busyboxLayer(), dataLayer("big", 24, 1 << 20)]);
    await pushImage(reg.host, "test/big", "1", big);
  });
  after(async () => {
    await stack?.stop();
    await Promise.all([reg?.stop(), proxy?.stop()]);
  });

  it("kill -9 mid-pull: the next pull resumes, check is clean, GC leaves no orphans", async () => {
    const ref = `${proxy.host}/test/big:1`;
    const layer = big.layers[1]!;
    proxy.faults = { throttleBlobs: 4 << 20 };
    const child = spawnFlotilla(["images", "pull", "-a", stack.socket, ref], { stdio: "ignore" });
    const exited = new Promise<number>((r) => child.on("exit", (c) => r(c ?? 1)));
    await waitFor("a partial layer ingest", async () => {
      const r = await stack.ctr(["content", "active"]);
      const line = r.stdout.split("\n").find((l) => l.includes(`layer-${layer.desc.digest}`));
      const m = line && /\s(\d+(?:\.\d+)?)\s*(MiB|MB|kB|KiB|B)\b/.exec(line);
      return m ? true : undefined;
    }, 30000, 100);
    // let some megabytes land
    await new Promise((r) => setTimeout(r, 1500));
    const old = stack.kill("transfer", "SIGKILL");
    assert.notEqual(await exited, 0, "the interrupted pull fails");
    await stack.waitRestarted("transfer", old);
    const active = await stack.ctr(["content", "active"]);
    assert.match(active.stdout, new RegExp(`layer-${layer.desc.digest}`), "the partial ingest survived");
    proxy.faults = {};
    proxy.log.length = 0;
    await new TransferClient(testChannels.get(stack.socket)).pull(background("default"), ref, { platforms: [hostPlatform()], unpacks: [{ platform: hostPlatform(), snapshotter: "" }] });
    const gets = proxy.log.filter((l) => l.includes(`blobs/${layer.desc.digest}`));
    assert.equal(gets.length, 1, gets.join("\n"));
    const resumedAt = Number(/range=bytes=(\d+)-/.exec(gets[0]!)?.[1] ?? 0);
    assert.ok(resumedAt > 1 << 20, `resumed at ${resumedAt}`);
    const check = await stack.ctr(["images", "check"]);
    assert.match(check.stdout, /complete \(3\/3\).*true/, check.stdout);
    // The killed pull's lease is left to expire, as containerd leaves it; remove it and collect.
    const leases = (await stack.ctr(["leases", "ls", "-q"])).stdout.trim().split("\n").filter(Boolean);
    assert.equal(leases.length, 1, "only the interrupted pull's lease is left");
    assert.equal((await stack.ctr(["leases", "rm", "--sync", ...leases])).code, 0);
    const content = (await stack.ctr(["content", "ls", "-q"])).stdout.trim().split("\n").sort();
    assert.deepEqual(content, [big.manifest.desc.digest, big.config.desc.digest, ...big.layers.map((l) => l.desc.digest)].sort());
    assert.equal((await stack.ctr(["content", "active"])).stdout.split("\n").filter((l) => l.includes("sha256")).length, 0);
    const snaps = await stack.ctr(["snapshots", "ls"]);
    assert.ok(!snaps.stdout.includes("extract-"), snaps.stdout);
    assert.equal(snaps.stdout.trim().split("\n").length - 1, 2, snaps.stdout);
  });

  it("concurrent pulls of images sharing a layer download it once", async () => {
    const shared = dataLayer("shared", 8, 1 << 20);
    const a = buildImage([shared, dataLayer("a", 1, 1000)]);
    const b = buildImage([shared, dataLayer("b", 1, 1000)]);
    await pushImage(reg.host, "test/a", "1", a);
    await pushImage(reg.host, "test/b", "1", b);
    proxy.faults = { throttleBlobs: 16 << 20 };
    proxy.log.length = 0;
    const c = new TransferClient(testChannels.get(stack.socket));
    const opts = { platforms: [hostPlatform()], unpacks: [{ platform: hostPlatform(), snapshotter: "overlayfs" }] };
    await Promise.all([
      c.pull(background("default"), `${proxy.host}/test/a:1`, opts),
      c.pull(background("other"), `${proxy.host}/test/b:1`, opts),
      c.pull(background("default"), `${proxy.host}/test/b:1`, opts),
    ]);
    proxy.faults = {};
    const gets = proxy.log.filter((l) => l.startsWith("GET") && l.includes(`blobs/${a.layers[0]!.desc.digest}`));
    assert.equal(gets.length, 1, proxy.log.join("\n"));
    for (const ns of ["default", "other"]) {
      const check = await stack.ctr(["images", "check"], { namespace: ns });
      assert.ok(!/incomplete|missing/.test(check.stdout), check.stdout);
      assert.match(check.stdout, /test\/b:1.*complete \(3\/3\).*true/);
    }
  });
});
