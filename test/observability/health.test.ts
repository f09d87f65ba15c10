/**
 * grpc.health.v1 on the gateway socket tells the truth: a stack from `bin/flotilla up`, one service
 * process killed by its PID from `<state>/supervisor.json`; the gateway then says NOT_SERVING for every
 * service that process owns and for the overall "" service (the others stay SERVING), a Watch follows
 * the change, and both come back to SERVING once the supervisor has restarted the process.
 */
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, describe, it } from "node:test";
import { background } from "../../libs/context";
import { ErrorCodes } from "../../libs/errdefs";
import { RpcClient } from "../../libs/grpc/client";
import { OWNED_SERVICES } from "../../libs/topology";
import { startStack, waitFor, type Stack } from "../harness";

const HEALTH = "grpc.health.v1.Health";
const SERVING = 1;
const NOT_SERVING = 2;

describe("observability - the gateway's health follows each owner", () => {
  let s: Stack;
  let health: RpcClient;
  const check = async (service: string): Promise<number> => Number((await health.unary({ ...background(), deadline: new Date(Date.now() + 5000) }, "Check", { service })).status);

  before(async () => {
    s = await startStack();
    health = new RpcClient(s.socket, HEALTH);
  });
  after(async () => {
    await s?.stop();
  });

  it("answers SERVING for every service while every owner runs, and NotFound for a service nobody serves", async () => {
    assert.equal(await check(""), SERVING);
    for (const svc of [...Object.values(OWNED_SERVICES).flat(), "containerd.services.version.v1.Version", HEALTH]) assert.equal(await check(svc), SERVING, svc);
    await assert.rejects(check("no.such.Service"), (e: Error & { code?: string }) => e.code === ErrorCodes.NotFound);
  });

  it("says NOT_SERVING for a killed owner's services and \"\", and SERVING again after the supervisor restarts it", async () => {
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
    process.kill(pid, "SIGKILL");
    await waitFor("images to be NOT_SERVING on the gateway", async () => ((await check("containerd.services.images.v1.Images")) === NOT_SERVING ? true : undefined), 5000, 20);
    // The supervisor restarts it after 200 ms and a Node process takes longer than that to boot: it is
    // still down for these.
    const down = await Promise.all(["containerd.services.namespaces.v1.Namespaces", "containerd.services.leases.v1.Leases", ""].map(check));
    const up = await Promise.all(["containerd.services.content.v1.Content", "containerd.services.tasks.v1.Tasks", "containerd.services.version.v1.Version"].map(check));
    assert.deepEqual(down, [NOT_SERVING, NOT_SERVING, NOT_SERVING], "the killed process's other services and the overall status");
    assert.deepEqual(up, [SERVING, SERVING, SERVING], "services of the processes still running stay SERVING");

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
