/**
 * CRI pods through the door a kubelet uses: the real crictl against `bin/flotilla up`'s gateway socket,
 * with containerd's CRI config tables. runp, pods, inspectp, statsp, stopp, rmp; a duplicate pod name
 * and an unknown runtime handler give clear errors and leave nothing; a CRI process killed with -9
 * comes back with its pods; nothing is leaked (netns, IPs, bridge ports, mounts, containers).
 */
import { after, before, describe, it } from "node:test";
import * as assert from "node:assert/strict";
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { listNetns } from "#libs/cni";
import { background } from "#libs/context";
import { SandboxStoreProxy } from "#libs/clients/sandbox";
import { freePort } from "#cli/supervisor";
import { runCommand, testChannels, waitFor } from "#test/harness";
import { podConfig, startCriStack, type CriStack } from "./helpers";

interface Inspect {
  status: {
    id: string;
    state: string;
    metadata: { name: string };
    network: { ip: string };
    labels: Record<string, string>;
    linux: { namespaces: { options: { network: string } } };
  };
  info: { pid: number; runtimeType: string };
}

describe("cri pods (crictl)", { timeout: 170_000 }, () => {
  let stack: CriStack;
  let sandboxes: SandboxStoreProxy;
  const k8s = background("k8s.io");
  const netnsDir = (): string => path.join(stack.state, "sandbox", "netns");
  const podIds = async (): Promise<string[]> => (await stack.crictlOk(["pods", "-q", "--no-trunc"])).split("\n").filter(Boolean);
  const inspect = async (id: string): Promise<Inspect> => JSON.parse(await stack.crictlOk(["inspectp", "-o", "json", id])) as Inspect;
  const mountsOf = (id: string): string[] => fs.readFileSync("/proc/self/mountinfo", "utf8").split("\n").filter((l) => l.includes(id));

  /** Nothing left of any pod: no CRI record, netns, address, bridge port, mount, containerd container or sandbox. */
  const assertNothingLeft = async (ids: string[]): Promise<void> => {
    assert.deepEqual(await podIds(), []);
    assert.deepEqual(listNetns(netnsDir()), []);
    assert.deepEqual(stack.net.allocations(), []);
    assert.deepEqual(stack.net.bridgePorts(), []);
    for (const id of ids) assert.deepEqual(mountsOf(id), [], `mounts of ${id}`);
    const ctrs = await stack.ctr(["containers", "ls", "-q"], { namespace: "k8s.io" });
    assert.equal(ctrs.stdout.trim(), "");
    assert.deepEqual(await sandboxes.list(k8s), []);
    assert.deepEqual(fs.readdirSync(path.join(stack.root, "cri", "sandboxes")), []);
  };

  before(async () => {
    stack = await startCriStack();
    sandboxes = new SandboxStoreProxy(testChannels.get(stack.socket));
  });

  after(async () => {
    await stack?.stop();
  });

  it("version and status answer through the gateway's socket", async () => {
    const v = await stack.crictlOk(["version"]);
    assert.match(v, /RuntimeName:\s+containerd/);
    assert.match(v, /RuntimeApiVersion:\s+v1/);
    const info = JSON.parse(await stack.crictlOk(["info", "-o", "json"])) as { status: { conditions: { type: string; status: boolean }[] } };
    assert.deepEqual(info.status.conditions.map((c) => [c.type, c.status]), [["RuntimeReady", true], ["NetworkReady", true]]);
    const plugins = await stack.ctr(["plugins", "ls"]);
    assert.match(plugins.stdout, /io\.containerd\.grpc\.v1\s+cri\s+-\s+ok/);
  });

  it("runp, pods, inspectp, statsp, stopp, rmp: a pod on the CNI network, then nothing left", async () => {
    const cfg = stack.writeConfig("pod-a", podConfig("pod-a", { hostname: "pod-a-host", labels: { app: "a" }, dns_config: { servers: ["10.0.0.10"], searches: ["svc.test"], options: ["ndots:5"] } }));
    const id = (await stack.crictlOk(["runp", cfg])).trim();
    assert.match(id, /^[0-9a-f]{64}$/);
    assert.deepEqual(await podIds(), [id]);
    assert.match(await stack.crictlOk(["pods", "--label", "app=a"]), /pod-a\s/);
    assert.equal((await stack.crictlOk(["pods", "-q", "--label", "app=b"])).trim(), "");

    const st = await inspect(id.slice(0, 12));
    assert.equal(st.status.id, id);
    assert.equal(st.status.state, "SANDBOX_READY");
    assert.equal(st.status.metadata.name, "pod-a");
    assert.equal(st.status.labels.app, "a");
    assert.equal(st.status.linux.namespaces.options.network, "POD");
    assert.ok(st.status.network.ip.startsWith(`${stack.net.prefix}.`), `pod IP ${st.status.network.ip} in ${stack.net.subnet}`);
    assert.equal(st.info.runtimeType, "io.containerd.runc.v2");
    assert.ok(st.info.pid > 0 && fs.existsSync(`/proc/${st.info.pid}`), "the pause process runs");

    // The files the pod's containers mount.
    const dir = path.join(stack.root, "cri", "sandboxes", id);
    assert.equal(fs.readFileSync(path.join(dir, "hostname"), "utf8"), "pod-a-host\n");
    assert.equal(fs.readFileSync(path.join(dir, "resolv.conf"), "utf8"), "search svc.test\nnameserver 10.0.0.10\noptions ndots:5\n");
    assert.match(fs.readFileSync(path.join(dir, "hosts"), "utf8"), /^127\.0\.0\.1\tlocalhost$/m);
    assert.equal(mountsOf(id).filter((l) => / tmpfs /.test(l) || /shm/.test(l)).length, 1, "the pod's /dev/shm is mounted");

    // containerd's view in k8s.io: the pause container with the CRI's labels, and the sandbox record.
    const info = await stack.ctr(["containers", "info", id], { namespace: "k8s.io" });
    assert.equal(info.code, 0, info.stderr);
    const labels = (JSON.parse(info.stdout) as { Labels: Record<string, string> }).Labels;
    assert.equal(labels["io.cri-containerd.kind"], "sandbox");
    assert.equal(labels.app, "a");
    const sb = await sandboxes.get(k8s, id);
    assert.equal(sb.sandboxer, "podsandbox");
    assert.equal(sb.labels["io.cri-containerd.kind"], "sandbox");

    const stats = JSON.parse(await stack.crictlOk(["statsp", "-o", "json", "--id", id])) as { stats: { attributes: { id: string }; linux: { memory: { workingSetBytes: { value: string } } } }[] };
    assert.equal(stats.stats.length, 1);
    assert.equal(stats.stats[0]!.attributes.id, id);
    assert.ok(Number(stats.stats[0]!.linux.memory.workingSetBytes.value) > 0, "working set of the pause process");

    await stack.crictlOk(["stopp", id]);
    assert.equal((await inspect(id)).status.state, "SANDBOX_NOTREADY");
    assert.deepEqual(stack.net.allocations(), [], "the pod's IP is released at stop");
    assert.deepEqual(listNetns(netnsDir()), []);
    await stack.crictlOk(["stopp", id]); // again: nothing to do
    await stack.crictlOk(["rmp", id]);
    await assertNothingLeft([id]);
    const gone = await stack.crictl(["inspectp", id]);
    assert.notEqual(gone.code, 0);
    assert.match(gone.stderr, /not found/);
  });

  it("a duplicate pod name and an unknown runtime handler are refused, leaving nothing", async () => {
    const cfg = stack.writeConfig("pod-dup", podConfig("pod-dup"));
    const id = (await stack.crictlOk(["runp", cfg])).trim();
    const dup = await stack.crictl(["runp", cfg]);
    assert.notEqual(dup.code, 0);
    assert.match(dup.stderr, /AlreadyExists/);
    assert.match(dup.stderr, /failed to reserve sandbox name/);
    assert.ok(dup.stderr.includes(`is reserved for \\"${id}\\"`), dup.stderr);
    assert.deepEqual(await podIds(), [id]);

    const other = stack.writeConfig("pod-rt", podConfig("pod-rt"));
    const bad = await stack.crictl(["runp", "--runtime", "no-such-handler", other]);
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /InvalidArgument/);
    assert.ok(bad.stderr.includes('no runtime for \\"no-such-handler\\" is configured'), bad.stderr);
    assert.deepEqual(await podIds(), [id]);

    await stack.crictlOk(["rmp", "-f", id]);
    await assertNothingLeft([id]);
    // Its name is free again.
    const again = (await stack.crictlOk(["runp", cfg])).trim();
    await stack.crictlOk(["rmp", "-f", again]);
    await assertNothingLeft([again]);
  });

  it("a pod's hostPort answers on the host's 127.0.0.1 (CNI portmap), and is gone with the pod", async () => {
    const hostPort = await freePort();
    const cfg = stack.writeConfig("pod-port", podConfig("pod-port", { port_mappings: [{ protocol: 0, container_port: 8080, host_port: hostPort }] }));
    const id = (await stack.crictlOk(["runp", cfg])).trim();
    const { info } = await inspect(id);
    // A one-shot server inside the pod's network namespace (the pause process holds it).
    const server = spawn("nsenter", ["-t", String(info.pid), "-n", "busybox", "nc", "-l", "-p", "8080", "-e", "echo", "hello-from-the-pod"], { stdio: "ignore" });
    try {
      const reply = await waitFor("the hostPort to answer", async () => {
        const r = await runCommand("busybox", ["nc", "127.0.0.1", String(hostPort)], { timeoutMs: 5000 });
        return r.stdout.includes("hello-from-the-pod") ? r.stdout : undefined;
      }, 20000, 250);
      assert.match(reply, /hello-from-the-pod/);
    } finally {
      server.kill("SIGKILL");
    }
    await stack.crictlOk(["rmp", "-f", id]);
    await assertNothingLeft([id]);
    const after = await runCommand("busybox", ["nc", "-w", "1", "127.0.0.1", String(hostPort)], { timeoutMs: 5000 });
    assert.doesNotMatch(after.stdout, /hello-from-the-pod/);
  });

  it("a host-network pod shares the host's network namespace", async () => {
    const cfg = stack.writeConfig("pod-host", podConfig("pod-host", { linux: { security_context: { namespace_options: { network: 2 } } } }));
    const id = (await stack.crictlOk(["runp", cfg])).trim();
    const st = await inspect(id);
    assert.equal(st.status.linux.namespaces.options.network, "NODE");
    assert.equal(st.status.network.ip, "");
    assert.equal(fs.readlinkSync(`/proc/${st.info.pid}/ns/net`), fs.readlinkSync("/proc/self/ns/net"));
    assert.deepEqual(listNetns(netnsDir()), []);
    await stack.crictlOk(["rmp", "-f", id]);
    await assertNothingLeft([id]);
  });

  it("after kill -9 of the CRI process its pods are listed again and can be stopped and removed", async () => {
    const cfg = stack.writeConfig("pod-crash", podConfig("pod-crash"));
    const id = (await stack.crictlOk(["runp", cfg])).trim();
    const before = await inspect(id);
    const old = stack.kill("cri");
    await stack.waitRestarted("cri", old);
    const after = await inspect(id);
    assert.equal(after.status.state, "SANDBOX_READY");
    assert.equal(after.status.network.ip, before.status.network.ip);
    assert.equal(after.info.pid, before.info.pid);
    // The pause process dying makes the pod NOTREADY (the restarted CRI watches it again).
    process.kill(after.info.pid, "SIGKILL");
    for (let i = 0; i < 100 && (await inspect(id)).status.state !== "SANDBOX_NOTREADY"; i++) await new Promise((r) => setTimeout(r, 100));
    assert.equal((await inspect(id)).status.state, "SANDBOX_NOTREADY");
    await stack.crictlOk(["stopp", id]);
    await stack.crictlOk(["rmp", id]);
    await assertNothingLeft([id]);
  });
});
