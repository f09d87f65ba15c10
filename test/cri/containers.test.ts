/**
 * CRI containers: the OCI spec built from a ContainerConfig (compared with what containerd 1.6's CRI
 * writes for the same config), the CRI log format, and the container IO hub on real FIFOs.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { buildContainerSpec, DEFAULT_CAPS, processArgs, type SpecInput, type CriContainerConfig } from "#services/cri/src/containers/spec";
import { hostSpecFacts } from "#services/cri/src/containers/host";
import { rootfsFromMounts } from "#services/cri/src/containers/users";
import { CriLineSplitter, rfc3339Nano } from "#services/cri/src/containers/logfile";
import { ContainerIO, fifoPaths, makeFifos } from "#services/cri/src/containers/io";
import { testChannels, waitFor } from "#test/harness";
import { podConfig, startCriStack } from "#test/cri/helpers";
import { CriClient } from "#libs/clients/cri";
import { background } from "#libs/context";
import { startRegistry } from "#test/helpers/registry";
import { buildBusyboxImage, pushImage } from "#test/helpers/image";

const tmp = fs.mkdtempSync(path.join(process.env.TMPDIR ?? "/var/tmp", "cri-b-"));
test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** A rootfs like the fixture busybox image: its passwd and group. */
function rootfsDir(): string {
  const dir = path.join(tmp, "rootfs");
  fs.mkdirSync(path.join(dir, "etc"), { recursive: true });
  fs.writeFileSync(path.join(dir, "etc", "passwd"), "root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1:daemon:/usr/sbin:/bin/false\nwww-data:x:33:33:www-data:/var/www:/bin/false\ndefault-user:x:1000:1000::/home:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n");
  fs.writeFileSync(path.join(dir, "etc", "group"), "root:x:0:\ndaemon:x:1:\nwheel:x:10:root\nwww-data:x:33:\ngroup-defined-in-image:x:50000:default-user\nnogroup:x:65534:\n");
  return dir;
}

function podFiles(): SpecInput["podFiles"] {
  const d = path.join(tmp, "sandbox");
  fs.mkdirSync(path.join(d, "shm"), { recursive: true });
  for (const f of ["hostname", "hosts", "resolv.conf"]) fs.writeFileSync(path.join(d, f), "");
  return { hostname: path.join(d, "hostname"), hosts: path.join(d, "hosts"), resolvConf: path.join(d, "resolv.conf"), shm: path.join(d, "shm") };
}

function input(config: CriContainerConfig, extra: Partial<SpecInput> = {}): SpecInput {
  return {
    id: "c1",
    sandboxId: "s1",
    sandboxPid: 4242,
    config: { metadata: { name: "ctr" }, image: { image: "busybox:1.28" }, ...config },
    sandboxConfig: { metadata: { name: "pod", uid: "uid1", namespace: "ns" }, hostname: "podhost" },
    image: { Cmd: ["sh"], Env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "IMG=1"] },
    imageName: "docker.io/library/busybox:1.28",
    podFiles: podFiles(),
    rootfs: rootfsFromMounts([{ type: "bind", source: rootfsDir(), options: ["rbind", "ro"] }]),
    ...extra,
  };
}

const host = hostSpecFacts();

test("a plain container: containerd's CRI defaults (no masked paths, new privileges allowed, pod namespaces, CRI annotations)", () => {
  const s = buildContainerSpec(input({ envs: [{ key: "A", value: "b" }, { key: "IMG", value: "2" }], working_dir: "/tmp" }), host);
  assert.deepEqual(s.process.args, ["sh"]);
  assert.deepEqual(s.process.env, ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOSTNAME=podhost", "IMG=2", "A=b"]);
  assert.equal(s.process.cwd, "/tmp");
  assert.equal(s.process.noNewPrivileges, false);
  assert.equal(s.process.terminal, undefined);
  assert.deepEqual(s.process.user, { uid: 0, gid: 0, additionalGids: [0, 10] });
  assert.deepEqual(s.process.capabilities.bounding, [...DEFAULT_CAPS]);
  assert.deepEqual(s.linux.maskedPaths, []);
  assert.deepEqual(s.linux.readonlyPaths, []);
  assert.equal(s.root.path, "rootfs");
  assert.equal(s.linux.cgroupsPath, "/k8s.io/c1");
  assert.deepEqual(s.linux.namespaces.slice(0, 5), [
    { type: "pid", path: "/proc/4242/ns/pid" }, { type: "ipc", path: "/proc/4242/ns/ipc" }, { type: "uts", path: "/proc/4242/ns/uts" }, { type: "mount" }, { type: "network", path: "/proc/4242/ns/net" },
  ]);
  assert.deepEqual(s.annotations, {
    "io.kubernetes.cri.container-type": "container", "io.kubernetes.cri.sandbox-id": "s1", "io.kubernetes.cri.sandbox-namespace": "ns",
    "io.kubernetes.cri.sandbox-uid": "uid1", "io.kubernetes.cri.sandbox-name": "pod", "io.kubernetes.cri.container-name": "ctr",
    "io.kubernetes.cri.image-name": "docker.io/library/busybox:1.28",
  });
  // The default mounts, /dev/shm replaced by the pod's, cgroup read-only, then the pod files as rbind rprivate.
  const dests = s.mounts.map((m) => m.destination);
  assert.deepEqual(dests, ["/proc", "/dev", "/dev/pts", "/dev/mqueue", "/sys", "/sys/fs/cgroup", "/etc/hostname", "/etc/hosts", "/etc/resolv.conf", "/dev/shm"]);
  const hosts = s.mounts.find((m) => m.destination === "/etc/hosts")!;
  assert.deepEqual(hosts, { source: fs.realpathSync(path.join(tmp, "sandbox", "hosts")), destination: "/etc/hosts", type: "bind", options: ["rbind", "rprivate", "rw"] });
  assert.equal(s.linux.seccomp, undefined);
});

test("command and args: the kubelet's over the image's entrypoint and cmd", () => {
  const img = { Entrypoint: ["/ep"], Cmd: ["c1", "c2"] };
  assert.deepEqual(processArgs({}, img), ["/ep", "c1", "c2"]);
  assert.deepEqual(processArgs({ args: ["a"] }, img), ["/ep", "a"]);
  assert.deepEqual(processArgs({ command: ["/bin/x"] }, img), ["/bin/x"]);
  assert.deepEqual(processArgs({}, { Entrypoint: [""], Cmd: ["c"] }), ["c"]);
  assert.throws(() => processArgs({}, {}), /no command specified/);
});

test("capabilities: add, drop and ALL; privileged needs a privileged pod and gets everything", () => {
  const add = buildContainerSpec(input({ linux: { security_context: { capabilities: { add_capabilities: ["SYS_ADMIN"], drop_capabilities: ["CHOWN"] } } } }), host);
  assert.ok(add.process.capabilities.effective.includes("CAP_SYS_ADMIN"));
  assert.ok(!add.process.capabilities.bounding.includes("CAP_CHOWN"));
  const all = buildContainerSpec(input({ linux: { security_context: { capabilities: { add_capabilities: ["ALL"] } } } }), host);
  assert.deepEqual(all.process.capabilities.permitted, host.allCapabilities());
  const none = buildContainerSpec(input({ linux: { security_context: { capabilities: { drop_capabilities: ["ALL"] } } } }), host);
  assert.deepEqual(none.process.capabilities.bounding, []);
  assert.throws(() => buildContainerSpec(input({ linux: { security_context: { privileged: true } } }), host), /no privileged container allowed in sandbox/);
  const pi = input({ linux: { security_context: { privileged: true, masked_paths: ["/proc/kcore"] } } });
  pi.sandboxConfig.linux = { security_context: { privileged: true } };
  const p = buildContainerSpec(pi, host);
  assert.deepEqual(p.process.capabilities.bounding, host.allCapabilities());
  assert.deepEqual(p.linux.maskedPaths, []);
  assert.deepEqual(p.mounts.find((m) => m.type === "sysfs")!.options, ["nosuid", "noexec", "nodev", "rw"]);
  assert.deepEqual(p.linux.resources.devices, [{ allow: true, access: "rwm" }]);
  assert.ok((p.linux.devices ?? []).some((d) => d.path === "/dev/null"));
});

test("users and groups come from the image's /etc/passwd and /etc/group", () => {
  const byName = buildContainerSpec(input({ linux: { security_context: { run_as_username: "www-data" } } }), host);
  assert.deepEqual(byName.process.user, { uid: 33, gid: 33, additionalGids: [33] });
  const byUid = buildContainerSpec(input({ linux: { security_context: { run_as_user: { value: 1000 }, supplemental_groups: [1234, 5] } } }), host);
  assert.deepEqual(byUid.process.user, { uid: 1000, gid: 1000, additionalGids: [5, 1000, 1234, 50000] });
  const withGroup = buildContainerSpec(input({ linux: { security_context: { run_as_user: { value: 1003 }, run_as_group: { value: 1004 } } } }), host);
  assert.deepEqual(withGroup.process.user, { uid: 1003, gid: 1004, additionalGids: [1004] });
  const fromImage = buildContainerSpec(input({}, { image: { Cmd: ["sh"], User: "www-data:group-defined-in-image" } }), host);
  assert.deepEqual([fromImage.process.user.uid, fromImage.process.user.gid], [33, 50000]);
  assert.throws(() => buildContainerSpec(input({ linux: { security_context: { run_as_group: { value: 5 } } } }), host), /user group "5" is specified without user/);
  assert.throws(() => buildContainerSpec(input({ linux: { security_context: { run_as_username: "nosuch" } } }), host), /no users found/);
});

test("resources, OOM score (restricted to the CRI process's own), read-only rootfs, no-new-privs, cgroup parent", () => {
  const s = buildContainerSpec(
    input({ linux: { resources: { cpu_period: 100000, cpu_quota: 20000, cpu_shares: 512, memory_limit_in_bytes: 64 << 20, cpuset_cpus: "0", oom_score_adj: -999 }, security_context: { readonly_rootfs: true, no_new_privs: true } } }, {
      options: { restrictOomScoreAdj: true },
    }),
    host,
  );
  assert.deepEqual(s.linux.resources.cpu, { period: 100000, quota: 20000, shares: 512, cpus: "0" });
  assert.equal(s.linux.resources.memory!.limit, 64 << 20);
  assert.equal(s.process.oomScoreAdj, Math.max(-999, host.currentOomScoreAdj()));
  assert.equal(s.root.readonly, true);
  assert.equal(s.process.noNewPrivileges, true);
  assert.ok(s.mounts.filter((m) => m.destination.startsWith("/etc/")).every((m) => m.options!.includes("ro")));
  const slice = input({});
  slice.sandboxConfig.linux = { cgroup_parent: "/kubepods/besteffort/podx" };
  assert.equal(buildContainerSpec(slice, host).linux.cgroupsPath, "/kubepods/besteffort/podx/c1");
  slice.sandboxConfig.linux = { cgroup_parent: "/kubepods.slice/kubepods-pod1.slice" };
  assert.equal(buildContainerSpec(slice, host).linux.cgroupsPath, "kubepods-pod1.slice:cri-containerd:c1");
});

test("mounts: the kubelet's replace the pod files, propagation needs a shared host mount, parents first", () => {
  const vol = path.join(tmp, "vol");
  const sub = path.join(tmp, "vol-sub");
  const s = buildContainerSpec(input({ mounts: [{ container_path: "/data/sub", host_path: sub, readonly: true }, { container_path: "/data", host_path: vol }, { container_path: "/etc/hosts", host_path: vol }] }), host);
  const binds = s.mounts.filter((m) => m.type === "bind").map((m) => [m.destination, m.options!.join(",")]);
  assert.deepEqual(binds, [["/data", "rbind,rprivate,rw"], ["/data/sub", "rbind,rprivate,ro"], ["/etc/hosts", "rbind,rprivate,rw"], ["/etc/hostname", "rbind,rprivate,rw"], ["/etc/resolv.conf", "rbind,rprivate,rw"], ["/dev/shm", "rbind,rprivate,rw"]]);
  assert.ok(fs.statSync(sub).isDirectory(), "a missing host path is created");
  const prop = host.mountPropagationOf(fs.realpathSync(vol));
  const shared = prop.optional.includes("shared:");
  const bidi = (): unknown => buildContainerSpec(input({ mounts: [{ container_path: "/data", host_path: vol, propagation: 2 }] }), host);
  if (shared) assert.equal((bidi() as { linux: { rootfsPropagation: string } }).linux.rootfsPropagation, "rshared");
  else assert.throws(bidi, /is not a shared mount/);
});

test("seccomp: RuntimeDefault gets Flotilla's profile, unconfined and privileged none, a bad path is refused", () => {
  const def = buildContainerSpec(input({ linux: { security_context: { seccomp_profile_path: "runtime/default" } } }), host);
  assert.equal(def.linux.seccomp!.defaultAction, "SCMP_ACT_ALLOW");
  const denied = def.linux.seccomp!.syscalls![0]!.names;
  assert.ok(denied.includes("sethostname") && denied.includes("mount") && denied.includes("kexec_load"));
  const admin = buildContainerSpec(input({ linux: { security_context: { seccomp: { profile_type: 0 }, capabilities: { add_capabilities: ["SYS_ADMIN"] } } } }), host);
  assert.ok(!admin.linux.seccomp!.syscalls![0]!.names.includes("sethostname"));
  assert.equal(buildContainerSpec(input({ linux: { security_context: { seccomp: { profile_type: 1 } } } }), host).linux.seccomp, undefined);
  assert.throws(() => buildContainerSpec(input({ linux: { security_context: { seccomp_profile_path: "/some/file" } } }), host), /invalid profile "\/some\/file"/);
  const file = path.join(tmp, "profile.json");
  fs.writeFileSync(file, JSON.stringify({ defaultAction: "SCMP_ACT_ALLOW", syscalls: [{ names: ["sethostname"], action: "SCMP_ACT_ERRNO" }] }));
  const local = buildContainerSpec(input({ linux: { security_context: { seccomp: { profile_type: 2, localhost_ref: file } } } }), host);
  assert.deepEqual(local.linux.seccomp!.syscalls![0]!.names, ["sethostname"]);
});

test("CRI log lines: F for whole lines, P pieces over the line size limit, P for what ends without a newline", () => {
  const out: string[] = [];
  let t = 1_765_000_000_000_000_000n;
  const s = new CriLineSplitter("stdout", 8, (e) => out.push(e.toString()), () => (t += 1_500n));
  s.write(Buffer.from("hello\r\nab"));
  s.write(Buffer.from("cdefghijklmnopq\nlast"));
  s.end();
  assert.deepEqual(out.map((l) => l.slice(l.indexOf(" ") + 1)), ["stdout F hello\n", "stdout P abcdefgh\n", "stdout P ijklmnop\n", "stdout F q\n", "stdout P last\n"]);
  assert.equal(rfc3339Nano(1_765_000_000_120_000_000n), "2025-12-06T05:46:40.12Z");
  assert.equal(rfc3339Nano(1_765_000_000_000_000_000n), "2025-12-06T05:46:40Z");
  assert.equal(rfc3339Nano(1_765_000_000_000_000_001n), "2025-12-06T05:46:40.000000001Z");
});

test("the IO hub copies a container's output to its log file and an attach session, stdin_once closes stdin", async () => {
  const dir = path.join(tmp, "io");
  const f = fifoPaths(dir, "c1", true, false);
  makeFifos(dir, f);
  const logPath = path.join(tmp, "logs", "c1.log");
  let closed = 0;
  const cio = new ContainerIO("c1", f, logPath, 16384, { once: true, closeStdin: async () => void closed++ });
  // The "shim": holds the write ends, as a real shim does from Tasks.Create on.
  const outFd = fs.openSync(f.stdout, fs.constants.O_WRONLY);
  const errFd = fs.openSync(f.stderr, fs.constants.O_WRONLY);
  const inFd = fs.openSync(f.stdin, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  cio.connected();
  const { PassThrough } = await import("node:stream");
  const seen: string[] = [];
  const sink = new PassThrough();
  sink.on("data", (b: Buffer) => seen.push(b.toString()));
  const stdin = new PassThrough();
  const ac = new AbortController();
  const attached = cio.attach({ stdout: sink, stdin, tty: false, signal: ac.signal });
  fs.writeSync(outFd, "one\ntw");
  fs.writeSync(errFd, "oops\n");
  stdin.write("typed\n");
  await new Promise((r) => setTimeout(r, 200));
  const buf = Buffer.alloc(64);
  assert.equal(buf.subarray(0, fs.readSync(inFd, buf)).toString(), "typed\n");
  stdin.end();
  await waitFor("stdin_once: the end of the session's stdin closes the container's", () => (closed === 1 ? true : undefined), 5000);
  // The session follows the output on until the container's output ends.
  fs.writeSync(outFd, "o\n");
  fs.closeSync(outFd);
  fs.closeSync(errFd);
  fs.closeSync(inFd);
  await attached;
  await cio.wait();
  await cio.close();
  const lines = fs.readFileSync(logPath, "utf8").trim().split("\n").map((l) => l.replace(/^\S+ /, ""));
  assert.deepEqual(lines.sort(), ["stderr F oops", "stdout F one", "stdout F two"]);
  assert.equal(seen.join(""), "one\ntwo\n");
  for (const l of fs.readFileSync(logPath, "utf8").trim().split("\n")) assert.match(l, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z (stdout|stderr) [FP] /);
});

// ---- end to end: real crictl against `bin/flotilla up` (its CRI service behind the gateway) ----

test("crictl: pull, runp, create, start, ps, inspect, logs, stats, exec-free lifecycle, stop (timeout then SIGKILL), rm", { timeout: 170_000 }, async (t) => {
  const reg = await startRegistry();
  t.after(() => reg.stop());
  const passwd = "root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33:www-data:/var/www:/bin/false\n";
  const group = "root:x:0:\nwheel:x:10:root\nwww-data:x:33:\n";
  const img = buildBusyboxImage({
    applets: ["sh", "ls", "cat", "echo", "true", "sleep", "id", "touch", "head", "tr"],
    extraFiles: [{ path: "etc/passwd", type: "file", data: Buffer.from(passwd) }, { path: "etc/group", type: "file", data: Buffer.from(group) }],
  });
  await pushImage(reg, "library/busybox", "1.28", img);
  await pushImage(reg, "pause", "3.6", img);
  const hostsDir = path.join(tmp, "certs.d");
  for (const h of ["docker.io", "registry.k8s.io"]) {
    fs.mkdirSync(path.join(hostsDir, h), { recursive: true });
    fs.writeFileSync(path.join(hostsDir, h, "hosts.toml"), `server = "${reg.url}"\n[host."${reg.url}"]\n  capabilities = ["pull", "resolve"]\n`);
  }
  const stack = await startCriStack({ registryConfigPath: hostsDir, criExtra: ["max_container_log_line_size = 64"] });
  t.after(() => stack.stop());
  await stack.waitHealthy("cri");
  const crictl = async (...args: string[]): Promise<string> => (await stack.crictlOk(args)).trim();
  await crictl("pull", "busybox:1.28");
  const logDir = path.join(tmp, "pod-logs");
  const podJson = stack.writeConfig("pod", podConfig("cri-b-pod", { log_directory: logDir, linux: { security_context: { namespace_options: { network: 2 } } } }));
  const ctrJson = (name: string, extra: Record<string, unknown>): string => stack.writeConfig(name, { metadata: { name }, image: { image: "busybox:1.28" }, log_path: `${name}.log`, ...extra });
  const podId = await crictl("runp", podJson);
  t.after(async () => {
    await crictl("stopp", podId).catch(() => undefined);
    await crictl("rmp", podId).catch(() => undefined);
  });
  // A long line is cut at max_container_log_line_size (64) into P pieces.
  const long = "x".repeat(100);
  const c1 = await crictl("create", podId, ctrJson("talker", {
    command: ["sh", "-c", `trap '' TERM; echo hello; echo oops >&2; echo ${long}; id; while true; do sleep 0.5; echo tick; done`],
    envs: [{ key: "GREETING", value: "hi" }],
    linux: { security_context: { run_as_username: "www-data", supplemental_groups: [1234] } },
  }), podJson);
  assert.match(c1, /^[0-9a-f]{64}$/);
  let ps = await crictl("ps", "-a", "-q");
  assert.ok(ps.includes(c1), "a created container is listed");
  const created = JSON.parse(await crictl("inspect", c1)) as { status: { state: string; metadata: { name: string } }; info: { runtimeSpec: { process: { user: { uid: number; gid: number; additionalGids: number[] }; env: string[] }; annotations: Record<string, string> } } };
  assert.equal(created.status.state, "CONTAINER_CREATED");
  assert.equal(created.status.metadata.name, "talker");
  assert.deepEqual(created.info.runtimeSpec.process.user, { uid: 33, gid: 33, additionalGids: [33, 1234] });
  assert.ok(created.info.runtimeSpec.process.env.includes("GREETING=hi"));
  assert.equal(created.info.runtimeSpec.annotations["io.kubernetes.cri.sandbox-id"], podId);
  // The container record in k8s.io, as ctr sees it, with containerd's CRI labels and the pod as sandbox.
  const info = JSON.parse((await stack.ctr(["c", "info", c1], { namespace: "k8s.io" })).stdout) as { Labels: Record<string, string>; Sandbox?: string; SandboxID?: string };
  assert.equal(info.Labels["io.cri-containerd.kind"], "container");

  await crictl("start", c1);
  const running = JSON.parse(await crictl("inspect", c1)) as { status: { state: string; startedAt: string }; info: { pid: number } };
  assert.equal(running.status.state, "CONTAINER_RUNNING");
  assert.ok(running.info.pid > 0);
  ps = await crictl("ps", "--state", "Running", "-q");
  assert.ok(ps.split("\n").includes(c1));
  await waitFor("the container's output in its log", async () => ((await crictl("logs", c1)).includes("uid=33") ? true : undefined), 20_000);
  const logs = await stack.crictl(["logs", c1]);
  assert.match(logs.stdout, /^hello$/m);
  assert.match(logs.stderr, /^oops$/m);
  assert.ok(logs.stdout.includes(long), "crictl joins P pieces back into the line");
  const raw = fs.readFileSync(path.join(logDir, "talker.log"), "utf8").split("\n").filter(Boolean);
  assert.ok(raw.some((l) => / stdout P x{64}$/.test(l)), "the long line is cut into a P piece");
  assert.ok(raw.some((l) => / stderr F oops$/.test(l)));
  assert.match(logs.stdout, /groups=.*1234/);

  const stats = JSON.parse(await crictl("stats", "-o", "json", c1)) as { stats: { attributes: { id: string }; cpu?: { usageCoreNanoSeconds?: { value: string } }; memory?: { workingSetBytes?: { value: string } } }[] };
  assert.equal(stats.stats[0]!.attributes.id, c1);
  assert.ok(Number(stats.stats[0]!.memory?.workingSetBytes?.value ?? 0) > 0, "memory stats come from the task's cgroup");

  // ReopenContainerLog (no crictl command for it: the CRI client): the kubelet rotated the file.
  fs.renameSync(path.join(logDir, "talker.log"), path.join(logDir, "talker.log.1"));
  const cri = new CriClient(testChannels.get(`unix://${stack.socket}`));
  await cri.runtime.unary(background(), "ReopenContainerLog", { container_id: c1 });
  await waitFor("output in the new log file", () => (fs.existsSync(path.join(logDir, "talker.log")) && / stdout F tick$/m.test(fs.readFileSync(path.join(logDir, "talker.log"), "utf8")) ? true : undefined), 20_000);

  // UpdateContainerResources on a running container.
  await crictl("update", "--memory", String(128 << 20), "--cpu-share", "512", c1);
  const updated = JSON.parse(await crictl("inspect", c1)) as { info: { runtimeSpec: { linux: { resources: { memory: { limit: number }; cpu: { shares: number } } } } } };
  assert.equal(updated.info.runtimeSpec.linux.resources.memory.limit, 128 << 20);
  assert.equal(updated.info.runtimeSpec.linux.resources.cpu.shares, 512);

  // The shell ignores SIGTERM: stop waits the timeout, then SIGKILLs.
  const t0 = Date.now();
  await crictl("stop", "-t", "2", c1);
  assert.ok(Date.now() - t0 >= 1900, "the timeout was waited");
  const exited = JSON.parse(await crictl("inspect", c1)) as { status: { state: string; exitCode: number; reason: string; finishedAt: string } };
  assert.equal(exited.status.state, "CONTAINER_EXITED");
  assert.equal(exited.status.exitCode, 137);
  assert.equal(exited.status.reason, "Error");

  // GetContainerEvents (containerd 1.7's evented PLEG feed) follows the next container's whole life.
  const watch = new AbortController();
  const seen: { id: string; type: number; state?: string }[] = [];
  const watching = (async () => {
    for await (const e of cri.runtime.serverStream({ ...background(), signal: watch.signal }, "GetContainerEvents", {})) {
      seen.push({ id: e.container_id, type: Number(e.container_event_type), state: e.containers_statuses[0]?.state?.toString() });
    }
  })().catch(() => undefined);
  await new Promise((r) => setTimeout(r, 300));

  // A container that exits by itself: Completed with its code.
  const c2 = await crictl("create", podId, ctrJson("quick", { command: ["sh", "-c", "echo done; touch /x 2>/dev/null || echo read-only"], linux: { security_context: { readonly_rootfs: true } } }), podJson);
  await crictl("start", c2);
  const done = await waitFor("the quick container to exit", async () => {
    const s = JSON.parse(await crictl("inspect", c2)) as { status: { state: string; exitCode: number; reason: string } };
    return s.status.state === "CONTAINER_EXITED" ? s.status : undefined;
  }, 30_000);
  assert.deepEqual([done.exitCode, done.reason], [0, "Completed"]);
  assert.equal(await crictl("logs", c2), "done\nread-only");

  // A container the kernel's OOM killer ends: reason OOMKilled.
  const c3 = await crictl("create", podId, ctrJson("hog", { command: ["sh", "-c", "x=$(head -c 100000000 /dev/zero | tr '\\0' a); echo survived"], linux: { resources: { memory_limit_in_bytes: 16 << 20 } } }), podJson);
  await crictl("start", c3);
  const oom = await waitFor("the hog to be OOM-killed", async () => {
    const s = JSON.parse(await crictl("inspect", c3)) as { status: { state: string; exitCode: number; reason: string } };
    return s.status.state === "CONTAINER_EXITED" ? s.status : undefined;
  }, 30_000);
  assert.deepEqual([oom.exitCode, oom.reason], [137, "OOMKilled"]);

  await crictl("rm", c1);
  await crictl("rm", c2);
  await waitFor("the quick container's four events", () => (seen.filter((e) => e.id === c2).length >= 4 ? true : undefined), 20_000);
  watch.abort();
  await watching;
  // CONTAINER_CREATED_EVENT, _STARTED_, _STOPPED_, _DELETED_, in order.
  assert.deepEqual(seen.filter((e) => e.id === c2).map((e) => e.type), [0, 1, 2, 3]);
  await crictl("rm", c3);
  assert.equal(await crictl("ps", "-a", "-q"), "");
  const left = await stack.ctr(["c", "ls", "-q"], { namespace: "k8s.io" });
  assert.ok(!left.stdout.includes(c1) && !left.stdout.includes(c2), "the containerd records are gone");
  const snaps = await stack.ctr(["snapshot", "ls"], { namespace: "k8s.io" });
  assert.ok(!snaps.stdout.includes(c1), "the snapshot is gone");
  // Errors: an unknown container, a container in a pod that is gone.
  await assert.rejects(crictl("inspect", "0123456789abcdef"), /not found/i);
  await crictl("stopp", podId);
  await crictl("rmp", podId);
  await assert.rejects(crictl("create", podId, ctrJson("late", { command: ["true"] }), podJson), /not found/i);
});
