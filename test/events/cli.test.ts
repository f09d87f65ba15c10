/**
 * The events stream as a user meets it: `flotilla up` (its own nats-server) makes the JetStream stream
 * with the `[flotilla.events]` retention at start-up, `bin/flotilla events` replays it from a sequence
 * or a time, filters it with containerd's syntax and follows it, printing as `ctr events` does; a bad
 * `[flotilla.events]` value is refused by name.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { connect, nanos, StorageType, type NatsConnection } from "nats";
import { streamName } from "#libs/outbox";
import { startStack, waitFor, sleep, type Stack } from "../harness";
import { flotilla, spawnFlotilla } from "../helpers/flotilla";

const STREAM = streamName("flotilla.events");

describe("flotilla events and the stream", { timeout: 120_000 }, () => {
  let stack: Stack;
  let nc: NatsConnection;

  before(async () => {
    stack = await startStack({ extraToml: '[flotilla.events]\nmax_age = "2h"\nmax_bytes = 10485760\n' });
    const url = (JSON.parse(fs.readFileSync(path.join(stack.state, "supervisor.json"), "utf8")) as { nats_url: string }).nats_url;
    nc = await connect({ servers: url });
  });

  after(async () => {
    await nc?.close();
    await stack?.stop();
  });

  const ctrOk = async (args: string[]): Promise<void> => {
    const r = await stack.ctr(args);
    assert.equal(r.code, 0, r.stderr);
  };
  const events = async (args: string[]): Promise<string[][]> => {
    const r = await flotilla(["events", "-c", stack.configFile, ...args]);
    assert.equal(r.code, 0, r.stderr);
    return r.stdout.split("\n").filter(Boolean).map((l) => l.split(" "));
  };
  const created = (lines: string[][]): string[] => lines.filter((p) => p[5] === "/namespaces/create").map((p) => (JSON.parse(p.slice(6).join(" ")) as { name: string }).name);

  it("the stack makes the stream at start-up with the configured retention", async () => {
    const jsm = await nc.jetstreamManager();
    const info = await waitFor("the stream", () => jsm.streams.info(STREAM).catch(() => undefined));
    assert.deepEqual(info.config.subjects, ["flotilla.events.>"]);
    assert.equal(info.config.storage, StorageType.File);
    assert.equal(info.config.max_age, nanos(2 * 3_600_000));
    assert.equal(info.config.max_bytes, 10485760);
    assert.equal(info.config.num_replicas, 1);
  });

  it("replays from a sequence or a time, filters, and follows", async () => {
    await ctrOk(["namespaces", "create", "ev-a1"]);
    await ctrOk(["namespaces", "create", "ev-a2"]);
    const jsm = await nc.jetstreamManager();
    await waitFor("both events in the stream", async () => ((await jsm.streams.info(STREAM)).state.messages >= 2 ? true : undefined));
    await sleep(50);
    const since = new Date().toISOString();
    await sleep(50);
    await ctrOk(["namespaces", "create", "ev-a3"]);
    await waitFor("the third in the stream", async () => ((await jsm.streams.info(STREAM)).state.messages >= 3 ? true : undefined));

    const all = await events(["--from", "1"]);
    assert.deepEqual(created(all), ["ev-a1", "ev-a2", "ev-a3"]);
    for (const p of all) {
      assert.match(p.slice(0, 4).join(" "), /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)? \+0000 UTC$/, "Go's time, as ctr events prints it");
      assert.equal(p[4], "default");
    }
    assert.deepEqual(created(await events(["--since", since])), ["ev-a3"]);
    assert.deepEqual(created(await events(["--from", "1", "--filter", 'event.name=="ev-a2"'])), ["ev-a2"]);
    assert.deepEqual(await events(["--since", "2030-01-01T00:00:00Z"]), [], "nothing after the end: stops at once");

    // Following: new events only (as ctr events), printed as they come.
    const child = spawnFlotilla(["events", "-c", stack.configFile, "--filter", 'topic=="/namespaces/create"']);
    let out = "";
    let err = "";
    child.stdout!.on("data", (b: Buffer) => (out += b.toString()));
    child.stderr!.on("data", (b: Buffer) => (err += b.toString()));
    try {
      // (Until it prints one: a follower that is not subscribed yet misses what comes before.)
      let n = 0;
      await waitFor("flotilla events --follow to print a new namespace", async () => {
        if (!out.includes("ev-f")) await stack.ctr(["namespaces", "create", `ev-f${n++}`]);
        return out.includes('"name":"ev-f') ? true : undefined;
      }, 30000, 500).catch((e: Error) => {
        throw new Error(`${e.message}: printed ${JSON.stringify(out)}, stderr ${JSON.stringify(err)}`);
      });
      assert.ok(!out.includes("ev-a1"), "a follower without --since/--from starts at the end");
    } finally {
      child.kill("SIGTERM");
    }
  });

  it("a bad [flotilla.events] value is refused by name", async () => {
    const file = path.join(stack.dir, "bad.toml");
    fs.writeFileSync(file, 'version = 2\n[flotilla.events]\nmax_age = "forever"\n');
    const r = await flotilla(["config", "check", "-c", file]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /\[flotilla\.events\] max_age|flotilla\.events\.max_age/);
  });
});
