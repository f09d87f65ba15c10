/**
 * Issue 19: Docker Engine (Debian's dockerd 20.10, containerd's Go client 1.6) on a Flotilla stack
 * started with `bin/flotilla up`: `dockerd --containerd=<the gateway socket>` with its own data and exec
 * roots starts on a fresh stack (namespaces "moby" and "plugins.moby" do not exist yet), loads a
 * busybox image built here, and runs, execs, logs, stops, restarts, pauses and removes containers; a
 * running container survives a restart of the whole stack (SIGTERM to `up`, `up` again, same config).
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { runCommand, startStack, sleep, unmountBelow, waitFor, type CtrResult, type Stack } from "../harness";
import { buildBusyboxImage, tar } from "../helpers/image";
import { alive, deleteRuncContainers, stopStackAndCleanup } from "../tasks/helpers";
import { repoRoot } from "#libs/proto";

const DOCKERD = "/usr/sbin/dockerd";
const DOCKER = "/usr/bin/docker"; // Debian's client, the same version as the daemon
const IMAGE = "flotilla-busybox:test";

/** A docker-archive (`docker save` format) of the test busybox image, for `docker load`. */
function busyboxArchive(): Buffer {
  const img = buildBusyboxImage({ index: false, applets: ["sh", "echo", "cat", "sleep", "true", "hostname"] });
  const hex = (d: string): string => d.slice("sha256:".length);
  const layerPath = `${hex(img.layer.diffID)}/layer.tar`;
  const configPath = `${hex(img.config.descriptor.digest)}.json`;
  return tar([
    { path: hex(img.layer.diffID), type: "dir" },
    { path: layerPath, type: "file", data: img.layer.uncompressed },
    { path: configPath, type: "file", data: img.config.data },
    { path: "manifest.json", type: "file", data: Buffer.from(JSON.stringify([{ Config: configPath, RepoTags: [IMAGE], Layers: [layerPath] }])) },
  ]);
}

describe("Docker Engine on a Flotilla stack", () => {
  let stack: Stack;
  let dir: string;
  let dockerd: ChildProcess | undefined;
  let upAgain: ChildProcess | undefined;
  let dockerLog = "";
  const docker = (args: string[], input?: Buffer): Promise<CtrResult> =>
    runCommand(DOCKER, args, { env: { DOCKER_HOST: `unix://${dir}/docker.sock`, DOCKER_CONFIG: path.join(dir, "client") }, ...(input ? { input } : {}), timeoutMs: 30000 });
  const ok = async (args: string[], input?: Buffer): Promise<string> => {
    const r = await docker(args, input);
    assert.equal(r.code, 0, `docker ${args.join(" ")}: ${r.stderr}\n--- dockerd:\n${dockerLog.slice(-3000)}`);
    return r.stdout;
  };
  const state = async (name: string): Promise<{ Status: string; Running: boolean; Paused: boolean; Pid: number }> =>
    JSON.parse(await ok(["inspect", "--format", "{{json .State}}", name])) as { Status: string; Running: boolean; Paused: boolean; Pid: number };

  before(async () => {
    stack = await startStack();
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "flt-docker-"));
    dockerd = spawn(DOCKERD, [
      `--containerd=${stack.socket}`,
      `--data-root=${dir}/data`,
      `--exec-root=${dir}/exec`,
      `--pidfile=${dir}/docker.pid`,
      `--host=unix://${dir}/docker.sock`,
      "--bridge=none",
      "--iptables=false",
      "--ip6tables=false",
      "--ip-masq=false",
      "--userland-proxy=false",
    ], { stdio: ["ignore", "pipe", "pipe"] });
    dockerd.stdout!.on("data", (b: Buffer) => (dockerLog += b.toString()));
    dockerd.stderr!.on("data", (b: Buffer) => (dockerLog += b.toString()));
    await waitFor("dockerd to answer", async () => ((await docker(["version"])).code === 0 ? true : undefined), 60000, 250).catch((e: Error) => {
      throw new Error(`${e.message}\n${dockerLog.slice(-4000)}`);
    });
  });

  after(async () => {
    if (dockerd && dockerd.exitCode === null) {
      const ids = (await docker(["ps", "-aq"]).catch(() => ({ stdout: "" }))).stdout.split("\n").filter(Boolean);
      if (ids.length) await docker(["rm", "-f", ...ids]).catch(() => undefined);
      const exited = new Promise<void>((r) => dockerd!.once("exit", () => r()));
      dockerd.kill("SIGTERM");
      await Promise.race([exited, sleep(15000)]);
      if (dockerd.exitCode === null && dockerd.signalCode === null) dockerd.kill("SIGKILL");
    }
    if (upAgain?.pid && alive(upAgain.pid)) {
      const exited = new Promise<void>((r) => upAgain!.once("exit", () => r()));
      upAgain.kill("SIGTERM");
      await Promise.race([exited, sleep(15000)]);
    }
    if (dir) deleteRuncContainers([path.join(dir, "exec", "runtime-runc")]);
    await stopStackAndCleanup(stack);
    if (dir) {
      unmountBelow(dir);
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test("dockerd starts on a fresh stack and loads an image", async () => {
    const info = JSON.parse(await ok(["info", "--format", "{{json .}}"])) as { ServerVersion: string };
    assert.match(info.ServerVersion, /^20\.10\./);
    const load = await ok(["load"], busyboxArchive());
    assert.match(load, new RegExp(`Loaded image: ${IMAGE}`));
  });

  test("run --rm prints and exits with the command's status", async () => {
    assert.equal(await ok(["run", "--rm", "--network=none", IMAGE, "echo", "hello from docker"]), "hello from docker\n");
    const r = await docker(["run", "--rm", "--network=none", IMAGE, "sh", "-c", "exit 3"]);
    assert.equal(r.code, 3, r.stderr);
    // its first write there created the namespace
    const ns = await stack.ctr(["namespaces", "ls", "-q"]);
    assert.ok(ns.stdout.split("\n").includes("moby"), ns.stdout);
  });

  test("run -d, exec, logs, stop, restart, pause/unpause, rm -f", async () => {
    const id = (await ok(["run", "-d", "--name", "c1", "--network=none", IMAGE, "sh", "-c", "echo started-$(hostname); trap 'exit 0' TERM; while true; do sleep 0.2; done"])).trim();
    assert.match(id, /^[0-9a-f]{64}$/);
    assert.equal((await state("c1")).Running, true);
    assert.equal(await ok(["exec", "c1", "echo", "exec works"]), "exec works\n");
    await waitFor("the log line", async () => ((await ok(["logs", "c1"])).includes("started-") ? true : undefined));
    assert.equal((await ok(["logs", "c1"])).trim(), `started-${id.slice(0, 12)}`);

    await ok(["stop", "-t", "5", "c1"]);
    let st = await state("c1");
    assert.equal(st.Running, false);
    assert.equal(st.Status, "exited");

    await ok(["restart", "-t", "5", "c1"]);
    st = await state("c1");
    assert.equal(st.Running, true);
    assert.equal(await ok(["exec", "c1", "echo", "after restart"]), "after restart\n");

    await ok(["pause", "c1"]);
    st = await state("c1");
    assert.equal(st.Paused, true);
    assert.equal((await stack.ctr(["tasks", "ls"], { namespace: "moby" })).stdout.includes("PAUSED"), true);
    await ok(["unpause", "c1"]);
    assert.equal((await state("c1")).Paused, false);
    assert.equal(await ok(["exec", "c1", "echo", "unpaused"]), "unpaused\n");

    const pid = (await state("c1")).Pid;
    await ok(["rm", "-f", "c1"]);
    assert.equal((await docker(["inspect", "c1"])).code, 1);
    await waitFor("the container's process to go", () => (!alive(pid) ? true : undefined));
    const left = await stack.ctr(["containers", "ls", "-q"], { namespace: "moby" });
    assert.ok(!left.stdout.includes(id), left.stdout);
  });

  test("a running container survives a restart of the stack", async (t) => {
    await ok(["run", "-d", "--name", "survivor", "--network=none", IMAGE, "sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.2; done"]);
    const pid = (await state("survivor")).Pid;
    const sup = JSON.parse(fs.readFileSync(path.join(stack.state, "supervisor.json"), "utf8")).pid as number;
    const services = Object.values(JSON.parse(fs.readFileSync(path.join(stack.state, "supervisor.json"), "utf8")).services as Record<string, number>);
    const t0 = performance.now();
    process.kill(sup, "SIGTERM");
    await waitFor("the stack to stop", () => (![sup, ...services].some(alive) ? true : undefined), 20000, 20);
    const stopMs = performance.now() - t0;
    assert.ok(alive(pid), "the container kept running while the stack was down");

    const log = fs.openSync(path.join(stack.dir, "flotilla-again.log"), "a");
    upAgain = spawn(process.execPath, [path.join(repoRoot(), "bin", "flotilla"), "up", "--config", stack.configFile], { stdio: ["ignore", log, log] });
    fs.closeSync(log);
    for (const s of ["content", "snapshots", "images", "tasks", "transfer", "sandbox", "gateway"] as const) await stack.waitHealthy(s, 30000);
    const healthyMs = performance.now() - t0 - stopMs;
    // dockerd reconnects by itself; then its container is still there and running
    await waitFor("docker exec after the restart", async () => ((await docker(["exec", "survivor", "echo", "still here"])).stdout === "still here\n" ? true : undefined), 30000, 100);
    t.diagnostic(`stack stopped in ${Math.round(stopMs)} ms; up again (every process healthy) ${Math.round(healthyMs)} ms later, docker exec answered after ${Math.round(performance.now() - t0 - stopMs)} ms`);
    const st = await state("survivor");
    assert.equal(st.Running, true);
    assert.equal(st.Pid, pid);
    await ok(["rm", "-f", "survivor"]);
  });
});
