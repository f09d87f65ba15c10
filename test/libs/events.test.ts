/** The NATS event bus: envelopes published by one process reach subscribers, all topics or only some. */
import * as assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { background, withNamespace } from "#libs/context";
import { NatsEventBus, subjectForFilters, subjectsFor, type Envelope } from "#libs/events";
import { createLogger } from "#libs/log";
import { unpackAny } from "#libs/proto";
import { startNats, waitFor } from "../harness";

describe("events - NATS bus with topic-filtered subscriptions", () => {
  let nats: Awaited<ReturnType<typeof startNats>>;
  let pub: NatsEventBus;
  let sub: NatsEventBus;
  const bus = (name: string): NatsEventBus => new NatsEventBus({ url: nats.url, prefix: "flt.ev", log: createLogger("test", "silent"), name });

  before(async () => {
    nats = await startNats();
    pub = bus("pub");
    sub = bus("sub");
  });

  after(async () => {
    await pub?.close();
    await sub?.close();
    await nats?.stop();
  });

  it("a Subscribe's filters narrow the stream's subject to one namespace only when every filter requires it", () => {
    assert.equal(subjectForFilters("flt.ev", []), "flt.ev.>");
    assert.equal(subjectForFilters("flt.ev", ["namespace==ea"]), "flt.ev.ea.>");
    assert.equal(subjectForFilters("flt.ev", ["topic~=/tasks/,namespace==my.ns", "namespace==my.ns"]), "flt.ev.my~ns.>");
    assert.equal(subjectForFilters("flt.ev", ["namespace==ea", "namespace==eb"]), "flt.ev.>", "two namespaces");
    assert.equal(subjectForFilters("flt.ev", ["namespace==ea", "topic==/tasks/exit"]), "flt.ev.>", "one filter names none");
    assert.equal(subjectForFilters("flt.ev", ["namespace!=ea"]), "flt.ev.>");
    assert.equal(subjectForFilters("flt.ev", ['topic=="a,namespace==ea,"']), "flt.ev.>", "a quoted value is not a clause");
  });

  it("subjects: one per topic in every namespace, or everything", () => {
    assert.deepEqual(subjectsFor("flt.ev"), ["flt.ev.>"]);
    assert.deepEqual(subjectsFor("flt.ev", ["/namespaces/delete", "/snapshot/remove", "/namespaces/delete"]), ["flt.ev.*.namespaces.delete", "flt.ev.*.snapshot.remove"]);
    assert.throws(() => subjectsFor("flt.ev", ["namespaces/delete"]), /must start with/);
  });

  it("a filtered subscriber gets its topics from every namespace and nothing else", async () => {
    const all: Envelope[] = [];
    const some: Envelope[] = [];
    sub.subscribe((env) => all.push(env));
    sub.subscribe((env) => some.push(env), { topics: ["/namespaces/delete", "/images/create"] });
    const publish = (ns: string, topic: string, type: string, body: Record<string, unknown>): Promise<void> => pub.publish(withNamespace(background(), ns), topic, type, body);
    // Until the subscriptions are live at the server, events may pass by: probe until one is seen.
    await waitFor("subscriptions to be live", async () => {
      await publish("probe", "/namespaces/delete", "containerd.events.NamespaceDelete", { name: "probe" });
      return some.length > 0 && all.length > 0 ? true : undefined;
    }, 10000, 100);
    const probe = (e: Envelope): boolean => e.namespace === "probe";
    await publish("default", "/snapshot/prepare", "containerd.events.SnapshotPrepare", { key: "k", parent: "", snapshotter: "overlayfs" });
    await publish("a.b", "/namespaces/delete", "containerd.events.NamespaceDelete", { name: "a.b" });
    await publish("other", "/images/create", "containerd.services.images.v1.ImageCreate", { name: "img", labels: {} });
    await publish("other", "/images/delete", "containerd.services.images.v1.ImageDelete", { name: "img" });
    await publish("default", "/namespaces/delete", "containerd.events.NamespaceDelete", { name: "last" });
    await waitFor("the last event", () => (some.some((e) => e.namespace === "default") && all.some((e) => e.namespace === "default" && e.topic === "/namespaces/delete") ? true : undefined), 10000);
    // NATS keeps the order of one publisher's messages on one subscription.
    assert.deepEqual(all.filter((e) => !probe(e)).map((e) => `${e.namespace} ${e.topic}`), ["default /snapshot/prepare", "a.b /namespaces/delete", "other /images/create", "other /images/delete", "default /namespaces/delete"]);
    assert.deepEqual(some.filter((e) => !probe(e)).map((e) => `${e.namespace} ${e.topic}`).sort(), ["a.b /namespaces/delete", "default /namespaces/delete", "other /images/create"]);
    assert.equal(unpackAny<{ name: string }>(some.find((e) => e.namespace === "a.b")!.event).name, "a.b");
  });
});
