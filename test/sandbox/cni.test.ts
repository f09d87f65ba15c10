/** CNI networking of pod sandboxes with the real plugins (bridge, host-local, loopback, portmap). */
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, describe, it } from "node:test";
import { ErrorCodes } from "#libs/errdefs";
import { isMounted, listNetns } from "#libs/cni";
import { createLogger } from "#libs/log";
import { PodNetworks } from "#services/sandbox/src/local/podsandbox/network";
import { addrsIn, makeTestNet, pings, type TestNet } from "./net-helpers";
import { rejectsWith } from "./store-suite";

const BIN = ["/usr/lib/cni"];
const log = createLogger("cni-test", "silent");

describe("sandbox cni", () => {
  const nets: TestNet[] = [];
  const net = (o?: { portmap?: boolean }): TestNet => {
    const n = makeTestNet(o);
    nets.push(n);
    return n;
  };
  after(() => {
    for (const n of nets) n.cleanup();
  });

  it("sandbox cni - setup gives each sandbox its own namespace and address; teardown leaves nothing", async () => {
    const n = net();
    const pn = new PodNetworks({ confDir: n.confDir, binDirs: BIN, netnsDir: n.netnsDir, log });
    const a = await pn.setup(pn.plan("default", "pod-a", {}, ""), "pod-a");
    const b = await pn.setup(pn.plan("other", "pod-a", {}, ""), "pod-a");
    assert.ok(isMounted(a.netns) && isMounted(b.netns));
    assert.notEqual(a.netns, b.netns);
    assert.equal(a.addresses.length, 1);
    assert.ok(a.addresses[0]!.startsWith(n.prefix + "."), a.addresses[0]);
    assert.notEqual(a.addresses[0], b.addresses[0]);
    assert.match(addrsIn(a.netns), /lo\s+inet 127\.0\.0\.1/);
    assert.match(addrsIn(a.netns), new RegExp(`eth0\\s+inet ${a.addresses[0]!.replace(/\./g, "\\.")}`));
    const ip = a.addresses[0]!.split("/")[0]!;
    assert.ok(pings(ip), `${ip} answers from the host through ${n.bridge}`);
    assert.equal(n.bridgePorts().length, 2);
    assert.equal(n.allocations().length, 2);
    await pn.teardown(a, "pod-a");
    await pn.teardown(b, "pod-a");
    assert.ok(!fs.existsSync(a.netns) && !fs.existsSync(b.netns));
    assert.deepEqual(n.bridgePorts(), []);
    assert.deepEqual(n.allocations(), []);
    assert.ok(!pings(ip));
    // Teardown is repeatable.
    await pn.teardown(a, "pod-a");
  });

  it("sandbox cni - none and host modes, caller-made namespaces", async () => {
    const n = net();
    const pn = new PodNetworks({ confDir: n.confDir, binDirs: BIN, netnsDir: n.netnsDir, log });
    const none = await pn.setup(pn.plan("default", "p-none", { "io.flotilla.sandbox/network": "none" }, ""), "p-none");
    assert.ok(isMounted(none.netns));
    assert.doesNotMatch(addrsIn(none.netns), /eth0/);
    await pn.teardown(none, "p-none");
    assert.ok(!fs.existsSync(none.netns));
    const host = pn.plan("default", "p-host", { "io.flotilla.sandbox/network": "host" }, "");
    assert.equal(host.netns, "");
    const given = pn.plan("default", "p-given", {}, "/var/run/netns/somewhere");
    assert.equal(given.owned, false);
    assert.equal(given.netns, "/var/run/netns/somewhere");
    assert.throws(() => pn.plan("default", "x", { "io.flotilla.sandbox/network": "bogus" }, ""), (e: { code?: string }) => e.code === ErrorCodes.InvalidArgument);
    assert.deepEqual(n.allocations(), []);
  });

  it("sandbox cni - port mappings go to portmap and are removed at teardown", async () => {
    const n = net({ portmap: true });
    const pn = new PodNetworks({ confDir: n.confDir, binDirs: BIN, netnsDir: n.netnsDir, log });
    const st = await pn.setup(pn.plan("default", "p-ports", { "io.flotilla.sandbox/port-mappings": JSON.stringify([{ hostPort: 18080, containerPort: 80, protocol: "tcp" }]) }, ""), "p-ports");
    const { execFileSync } = await import("node:child_process");
    const rules = execFileSync("iptables-save", ["-t", "nat"], { encoding: "utf8" });
    assert.match(rules, /18080/);
    await pn.teardown(st, "p-ports");
    assert.doesNotMatch(execFileSync("iptables-save", ["-t", "nat"], { encoding: "utf8" }), /18080/);
    assert.throws(() => pn.plan("default", "x", { "io.flotilla.sandbox/port-mappings": "[{\"hostPort\":0}]" }, ""), (e: { code?: string }) => e.code === ErrorCodes.InvalidArgument);
  });

  it("sandbox cni - a broken config is a clear error with nothing left half set up", async () => {
    const n = net();
    const pn = new PodNetworks({ confDir: n.confDir, binDirs: BIN, netnsDir: n.netnsDir, log });
    const conf = path.join(n.confDir, "10-flt.conflist");
    const good = fs.readFileSync(conf, "utf8");

    fs.writeFileSync(conf, "{ not json");
    assert.throws(() => pn.plan("default", "b1", {}, ""), (e: { code?: string; message: string }) => e.code === ErrorCodes.InvalidArgument && /invalid JSON/.test(e.message));

    fs.writeFileSync(conf, JSON.stringify({ ...JSON.parse(good), plugins: [{ type: "no-such-plugin" }] }));
    assert.throws(() => pn.plan("default", "b2", {}, ""), (e: { code?: string; message: string }) => e.code === ErrorCodes.FailedPrecondition && /no-such-plugin.*not found/.test(e.message));

    fs.rmSync(conf);
    assert.throws(() => pn.plan("default", "b3", {}, ""), (e: { code?: string; message: string }) => e.code === ErrorCodes.FailedPrecondition && /no network config found/.test(e.message));

    // Valid config a plugin rejects at ADD after the bridge plugin made the veth and took an address: all undone.
    const doc = JSON.parse(good) as { plugins: Record<string, unknown>[] };
    doc.plugins.push({ type: "tuning", sysctl: { "net.ipv4.conf.eth0.no_such_knob": "1" } });
    fs.writeFileSync(conf, JSON.stringify(doc));
    const plan = pn.plan("default", "b4", {}, "");
    await rejectsWith(pn.setup(plan, "b4"), ErrorCodes.Unknown, /cni plugin tuning ADD failed/);
    assert.deepEqual(listNetns(n.netnsDir), []);
    assert.deepEqual(n.allocations(), []);
    assert.deepEqual(n.bridgePorts(), []);
    fs.writeFileSync(conf, good);
  });
});
