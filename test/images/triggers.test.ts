/** What wakes the garbage collector: events from the other processes routed to the scheduler. */
import * as assert from "node:assert/strict";
import { describe, it } from "node:test";
import { CONTAINER_EVENTS } from "#libs/core/containers";
import { CONTENT_EVENTS } from "#libs/core/content";
import { IMAGE_EVENTS } from "#libs/core/images";
import { SNAPSHOT_EVENTS } from "#libs/core/snapshots";
import { TASK_EVENTS } from "#libs/core/tasks";
import { subjectsFor, type Envelope } from "#libs/events";
import { packAny, toTimestamp } from "#libs/proto";
import { GC_TRIGGER_TOPICS, gcTriggers } from "#services/images/src/local/gc/triggers";

const env = (topic: string, type: string, event: Record<string, unknown>, namespace = "ns1"): Envelope => ({
  timestamp: toTimestamp(new Date()),
  namespace,
  topic,
  event: packAny(type, event),
});

function harness(swept: string[] = []) {
  const marks: string[] = [];
  const seen: string[] = [];
  const route = gcTriggers(
    { markDirty: (ns) => void marks.push(`dirty ${ns}`), markMutation: (ns) => void marks.push(`mutation ${ns}`) },
    (ns, kind, id) => {
      seen.push(`${ns} ${kind} ${id}`);
      return swept.includes(`${ns} ${kind} ${id}`);
    },
  );
  return { marks, seen, route };
}

describe("gc - triggers", () => {
  it("a container deletion schedules a pass in its namespace", () => {
    const h = harness();
    h.route(env(CONTAINER_EVENTS.delete.topic, CONTAINER_EVENTS.delete.type, { id: "c1" }, "other"));
    assert.deepEqual(h.marks, ["dirty other"]);
  });

  it("content and snapshot deletions schedule a pass unless the collector swept them itself", () => {
    const h = harness(["ns1 content sha256:aa", "ns1 snapshot overlayfs/k1"]);
    h.route(env(CONTENT_EVENTS.delete.topic, CONTENT_EVENTS.delete.type, { digest: "sha256:aa" }));
    h.route(env(SNAPSHOT_EVENTS.remove.topic, SNAPSHOT_EVENTS.remove.type, { key: "k1", snapshotter: "overlayfs" }));
    assert.deepEqual(h.marks, [], "the collector's own deletes wake nothing");
    h.route(env(CONTENT_EVENTS.delete.topic, CONTENT_EVENTS.delete.type, { digest: "sha256:bb" }));
    h.route(env(SNAPSHOT_EVENTS.remove.topic, SNAPSHOT_EVENTS.remove.type, { key: "k2", snapshotter: "native" }));
    assert.deepEqual(h.marks, ["dirty ns1", "dirty ns1"]);
    assert.deepEqual(h.seen, ["ns1 content sha256:aa", "ns1 snapshot overlayfs/k1", "ns1 content sha256:bb", "ns1 snapshot native/k2"]);
  });

  it("creations and updates count as mutations", () => {
    const h = harness();
    for (const e of [CONTENT_EVENTS.create, SNAPSHOT_EVENTS.prepare, SNAPSHOT_EVENTS.commit, CONTAINER_EVENTS.create, CONTAINER_EVENTS.update]) {
      h.route(env(e.topic, e.type, {}));
    }
    assert.deepEqual(h.marks, Array(5).fill("mutation ns1"));
  });

  it("other topics change nothing, and are not subscribed to", () => {
    const h = harness();
    for (const e of [IMAGE_EVENTS.delete, TASK_EVENTS.exit, TASK_EVENTS.delete]) {
      h.route(env(e.topic, e.type, {}));
      assert.ok(!GC_TRIGGER_TOPICS.includes(e.topic));
    }
    assert.deepEqual(h.marks, []);
    assert.equal(GC_TRIGGER_TOPICS.length, 8);
    assert.equal(subjectsFor("p", GC_TRIGGER_TOPICS).length, 8, "every trigger topic is a valid subscription");
  });

  it("an undecodable deletion event wakes nothing and is reported", () => {
    const marks: string[] = [];
    const reported: string[] = [];
    const route = gcTriggers(
      { markDirty: (ns) => void marks.push(ns), markMutation: (ns) => void marks.push(ns) },
      () => false,
      (_err, e) => void reported.push(e.topic),
    );
    const bad: Envelope = { timestamp: toTimestamp(new Date()), namespace: "ns1", topic: CONTENT_EVENTS.delete.topic, event: { type_url: "containerd.events.NoSuchEvent", value: Buffer.from([1]) } };
    route(bad);
    assert.deepEqual(marks, []);
    assert.deepEqual(reported, [CONTENT_EVENTS.delete.topic]);
  });
});
