/**
 * Issue 16: a fresh machine has no CNI config. On a stack whose config names no CNI conf dir (and no
 * /etc/cni/net.d networks), `bin/flotilla sandbox run` writes Flotilla's default network (bridge
 * flotilla0, host-local on 10.88.0.0/16, portmap) to `<root>/cni/net.d` and the pod gets an address
 * on it; `bin/flotilla run --sandbox` runs a container there; `bin/flotilla network ls|create|inspect|rm`
 * manage that directory. Cleanup removes the pod's netns, its IP allocation and (when no other pod of
 * this machine uses it) the bridge.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { confFiles, DEFAULT_NETWORK, listNetns } from "#libs/cni";
import { startStack, type Stack } from "../harness";
import { flotilla, flotillaOk } from "../helpers/flotilla";
import { buildBusyboxImage, startRegistry, type Registry } from "../images/registry";
import { pings } from "../sandbox/net-helpers";

/** Ports (veth host ends) on a bridge. */
function bridgePorts(bridge: string): string[] {
  const r = spawnSync("ip", ["-o", "link", "show", "master", bridge], { encoding: "utf8" });
  return r.status === 0 ? r.stdout.split("\n").filter(Boolean) : [];
}

describe("cli - the default CNI network and flotilla network", () => {
  let stack: Stack;
  let reg: Registry;
  let image: string;
  let ownDir: string;
  const f = (args: string[]): Promise<string> => flotillaOk(["-a", stack.socket, "-c", stack.configFile, ...args], { timeoutMs: 90_000 }).then((r) => r.stdout);
  const ipamFile = (ip: string): string => path.join("/var/lib/cni/networks", DEFAULT_NETWORK.name, ip);

  before(async () => {
    assert.equal(confFiles("/etc/cni/net.d").length, 0, "this test needs a machine with no system CNI networks");
    [stack, reg] = await Promise.all([startStack(), startRegistry()]);
    await reg.push("test/busybox", "net", buildBusyboxImage({ tag: "net" }));
    image = `${reg.host}/test/busybox:net`;
    ownDir = path.join(stack.root, "cni", "net.d");
  });
  after(async () => {
    await flotilla(["-a", stack.socket, "sandbox", "rm", "-f", "sb1"], { timeoutMs: 60_000 }).catch(() => undefined);
    await stack?.stop();
    await reg?.stop();
    if (bridgePorts(DEFAULT_NETWORK.bridge).length === 0) spawnSync("ip", ["link", "del", DEFAULT_NETWORK.bridge]);
  });

  it("sandbox run on a fresh stack creates the default network; run --sandbox works; rm leaves nothing", async () => {
    assert.equal(fs.existsSync(ownDir), false, "no network before first use");
    const [id, ip] = (await f(["sandbox", "run", "sb1"])).trim().split(" ");
    assert.equal(id, "sb1");
    assert.match(ip ?? "", /^10\.88\.\d+\.\d+$/, "an address on the default network");
    const conf = JSON.parse(fs.readFileSync(path.join(ownDir, "10-flotilla.conflist"), "utf8")) as { name: string; plugins: { type: string; bridge?: string; ipam?: { type: string } }[] };
    assert.equal(conf.name, "flotilla");
    assert.deepEqual(conf.plugins.map((p) => p.type), ["bridge", "portmap"]);
    assert.equal(conf.plugins[0]!.bridge, "flotilla0");
    assert.equal(conf.plugins[0]!.ipam!.type, "host-local");
    assert.ok(pings(ip!), "the pod answers from the host over flotilla0");

    await f(["images", "pull", image]);
    const out = await f(["run", "--sandbox", "sb1", "--rm", image, "/bin/busybox", "ip", "-o", "-4", "addr", "show", "eth0"]);
    assert.ok(out.includes(`inet ${ip}/16`), out);

    const netnsDir = path.join(stack.state, "sandbox", "netns");
    assert.equal(listNetns(netnsDir).length, 1);
    assert.ok(fs.existsSync(ipamFile(ip!)), "host-local holds the pod's address");
    await f(["sandbox", "rm", "-f", "sb1"]);
    assert.deepEqual(listNetns(netnsDir), []);
    assert.equal(fs.existsSync(ipamFile(ip!)), false, "the address is released");
    assert.equal(pings(ip!), false);
  });

  it("network ls, create, inspect and rm over Flotilla's conf dir", async () => {
    const ls = await f(["network", "ls"]);
    assert.match(ls, /^NAME\s+PLUGINS\s+BRIDGE\s+SUBNET\s+FILE$/m);
    assert.match(ls, new RegExp(`^flotilla\\s+bridge,portmap\\s+flotilla0\\s+10\\.88\\.0\\.0/16\\s+${ownDir}/10-flotilla\\.conflist$`, "m"));

    assert.equal((await f(["network", "create", "--subnet", "10.89.250.0/24", "extra"])).trim(), "extra");
    const auto = await f(["network", "create", "second"]);
    assert.equal(auto.trim(), "second");
    assert.deepEqual((await f(["network", "ls", "-q"])).trim().split("\n"), ["flotilla", "extra", "second"]);
    const insp = JSON.parse(await f(["network", "inspect", "extra"])) as { name: string; file: string; plugins: { bridge?: string; ipam?: { ranges: { subnet: string }[][] } }[] };
    assert.equal(insp.name, "extra");
    assert.equal(insp.file, path.join(ownDir, "50-extra.conflist"));
    assert.equal(insp.plugins[0]!.bridge, "flt-extra");
    assert.equal(insp.plugins[0]!.ipam!.ranges[0]![0]!.subnet, "10.89.250.0/24");
    const second = JSON.parse(await f(["network", "inspect", "second"])) as { plugins: { ipam?: { ranges: { subnet: string }[][] } }[] };
    assert.match(second.plugins[0]!.ipam!.ranges[0]![0]!.subnet, /^10\.89\.\d+\.0\/24$/);
    assert.notEqual(second.plugins[0]!.ipam!.ranges[0]![0]!.subnet, "10.89.250.0/24");

    const dup = await flotilla(["-c", stack.configFile, "network", "create", "extra"]);
    assert.equal(dup.code, 1);
    assert.match(dup.stderr, /network "extra": already exists/);
    const clash = await flotilla(["-c", stack.configFile, "network", "create", "--subnet", "10.88.5.0/24", "clash"]);
    assert.equal(clash.code, 1);
    assert.match(clash.stderr, /overlaps network "flotilla"/);
    const bad = await flotilla(["-c", stack.configFile, "network", "create", "--subnet", "10.300.0.0/24", "bad"]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /want an IPv4 CIDR/);

    assert.equal((await f(["network", "rm", "extra", "second"])).trim(), "extra\nsecond");
    assert.deepEqual((await f(["network", "ls", "-q"])).trim().split("\n"), ["flotilla"]);
    const missing = await flotilla(["-c", stack.configFile, "network", "inspect", "extra"]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /network "extra": not found/);
    const keep = await flotilla(["-c", stack.configFile, "network", "rm", "flotilla"]);
    assert.equal(keep.code, 1);
    assert.match(keep.stderr, /default network: it cannot be removed/);
  });
});
