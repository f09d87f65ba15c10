/**
 * Test networks: a CNI config dir with a bridge of a unique name on a private /24 of its own, IPAM state
 * under the test's temp dir, and cleanup that removes only what the test made (its bridge, any veth
 * left on it, namespaces pinned under its dir).
 */
import { execFileSync, spawnSync } from "node:child_process";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { mountsBelow } from "#libs/cni";

export interface TestNet {
  dir: string;
  confDir: string;
  ipamDir: string;
  netnsDir: string;
  bridge: string;
  network: string;
  /** e.g. "10.231.17" (the /24's first three octets). */
  prefix: string;
  subnet: string;
  /** Interfaces attached to the bridge (veth host ends). */
  bridgePorts(): string[];
  /** IPs host-local holds for the network. */
  allocations(): string[];
  cleanup(): void;
}

export function makeTestNet(opts: { portmap?: boolean; portmapSnat?: boolean } = {}): TestNet {
  const tag = crypto.randomBytes(3).toString("hex");
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "flt-net-"));
  const confDir = path.join(dir, "net.d");
  const ipamDir = path.join(dir, "ipam");
  const netnsDir = path.join(dir, "netns");
  fs.mkdirSync(confDir);
  const bridge = `fltbr${tag}`;
  const network = `flt-test-${tag}`;
  const b = crypto.randomBytes(2);
  const prefix = `10.${200 + (b[0]! % 50)}.${b[1]}`;
  const subnet = `${prefix}.0/24`;
  const plugins: Record<string, unknown>[] = [
    { type: "bridge", bridge, isGateway: true, ipMasq: false, hairpinMode: true, ipam: { type: "host-local", ranges: [[{ subnet }]], dataDir: ipamDir } },
  ];
  // portmapSnat: the host reaches a hostPort on 127.0.0.1 too (portmap masquerades localhost, as its default does).
  if (opts.portmap) plugins.push({ type: "portmap", capabilities: { portMappings: true }, snat: !!opts.portmapSnat });
  fs.writeFileSync(path.join(confDir, "10-flt.conflist"), JSON.stringify({ cniVersion: "1.0.0", name: network, plugins }, null, 2));
  const bridgePorts = (): string[] => {
    const r = spawnSync("ip", ["-o", "link", "show", "master", bridge], { encoding: "utf8" });
    if (r.status !== 0) return [];
    return r.stdout.split("\n").filter(Boolean).map((l) => l.split(":")[1]!.trim().replace(/@.*$/, ""));
  };
  const allocations = (): string[] => {
    const d = path.join(ipamDir, network);
    if (!fs.existsSync(d)) return [];
    return fs.readdirSync(d).filter((n) => /^\d+\.\d+\.\d+\.\d+$/.test(n));
  };
  return {
    dir, confDir, ipamDir, netnsDir, bridge, network, prefix, subnet, bridgePorts, allocations,
    cleanup: () => {
      for (const port of bridgePorts()) spawnSync("ip", ["link", "del", port]);
      spawnSync("ip", ["link", "del", bridge]);
      for (const m of mountsBelow(dir).sort((x, y) => y.length - x.length)) spawnSync("umount", ["-l", m]);
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** True when `ip` answers one ping from the host (busybox ping). */
export function pings(ip: string): boolean {
  return spawnSync("busybox", ["ping", "-c", "1", "-W", "2", ip], { stdio: "ignore" }).status === 0;
}

/** `ip -o addr` inside a pinned namespace. */
export function addrsIn(netns: string): string {
  return execFileSync("nsenter", [`--net=${netns}`, "ip", "-o", "addr"], { encoding: "utf8" });
}
