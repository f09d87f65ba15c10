/**
 * grpc.health.v1 on the gateway socket tells the truth: a stack from `bin/flotilla up`, one service
 * process (its PID from `<state>/supervisor.json`) frozen, then killed; the gateway says NOT_SERVING for
 * every service that process owns and for the overall "" service while it does not answer (the others
 * stay SERVING), a Watch follows the change, and both come back to SERVING once the supervisor has
 * restarted the process.
 */
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, describe, it } from "node:test";
import { background } from "#libs/context";
import { ErrorCodes } from "#libs/errdefs";
import { RpcClient } from "#libs/grpc/client";
import { OWNED_SERVICES } from "#libs/topology";
import { startStack, waitFor, type Stack, testChannels } from "../harness";

const HEALTH = "grpc.health.v1.Health";
const SERVING = 1;
const NOT_SERVING = 2;

describe("observability - the gateway's health follows each owner", () => {
  let s: Stack;
  let health: RpcClient<typeof HEALTH>;
  const check = async (service: string): Promise<number> => Number((await health.unary({ ...background(), deadline: new Date(Date.now() + 5000) }, "Check", { service })).status);

  before(async () => {
    s = await startStack();
    health = new RpcClient(testChannels.get(s.socket), HEALTH);
  });
  after(async () => {
    await s?.stop();
  });

  it("answers SERVING for every service while every owner runs, and NotFound for a service nobody serves", async () => {
    assert.equal(await check(""), SERVING);
    for (const svc of [...Object.values(OWNED_SERVICES).flat(), "containerd.services.version.v1.Version", HEALTH]) assert.equal(await check(svc), SERVING, svc);
    await assert.rejects(check("no.such.Service"), (e: Error & { code?: string }) => e.code === ErrorCodes.NotFound);
  });

  it("says NOT_SERVING for the services of an owner that does not answer or is killed, and for \"\"; SERVING again after the supervisor restarts it", async () => {
    const ac = new AbortController();
    const watched: number[] = [];
    const watching = (async () => {
      try {
        for await (const m of health.serverStream(background(undefined, { signal: ac.signal }), "Watch", { service: "containerd.services.images.v1.Images" })) watched.push(Number(m.status));
      } catch {
        /* cancelled at the end */
      }
    })();
    await waitFor("the watch's first answer", () => (watched.length > 0 ? true : undefined), 5000);
    assert.deepEqual(watched, [SERVING]);

    const supervised = JSON.parse(fs.readFileSync(path.join(s.state, "supervisor.json"), "utf8")) as { services: Record<string, number> };
    const pid = supervised.services.images!;
    assert.ok(pid > 0);
    const names = ["containerd.services.images.v1.Images", "containerd.services.namespaces.v1.Namespaces", "containerd.services.leases.v1.Leases", ""];
    const others = ["containerd.services.content.v1.Content", "containerd.services.tasks.v1.Tasks", "containerd.services.version.v1.Version"];
    // A process that no longer answers (frozen: the supervisor sees nothing to restart) is NOT_SERVING
    // once its answer is overdue; every other process's services stay SERVING.
    process.kill(pid, "SIGSTOP");
    try {
      await waitFor("images to be NOT_SERVING while frozen", async () => ((await check(names[0]!)) === NOT_SERVING ? true : undefined), 10000, 50);
      assert.deepEqual(await Promise.all(names.map(check)), names.map(() => NOT_SERVING), "the frozen process's services and the overall status");
      assert.deepEqual(await Promise.all(others.map(check)), others.map(() => SERVING), "services of the processes still answering");
    } finally {
      // Killed by its PID: the supervisor restarts it.
      process.kill(pid, "SIGKILL");
    }
    assert.deepEqual(await Promise.all(names.map(check)), names.map(() => NOT_SERVING), "down until restarted");
    const newPid = await s.waitRestarted("images", pid);
    assert.notEqual(newPid, pid);
    await waitFor("images to be SERVING again on the gateway", async () => ((await check("containerd.services.images.v1.Images")) === SERVING ? true : undefined), 10000, 50);
    assert.equal(await check(""), SERVING);
    await waitFor("the watch to see it come back", () => (watched.at(-1) === SERVING && watched.length >= 3 ? true : undefined), 5000);
    ac.abort();
    await watching;
    assert.deepEqual(watched, [SERVING, NOT_SERVING, SERVING], "the watch sent each change once");
  });
});
