/**
 * Issue 14 (NATS outside the stack): `[flotilla.nats]` names a server run by the operator, with TLS
 * (certificates from `bin/flotilla certs init`, the client's presented) and credentials, several URLs
 * for a cluster; events of ctr's calls reach a subscriber of that server and `ctr events`. The embedded
 * server's address, port and store come from the config and are printed at start; it takes the
 * config's token. An nkey seed file authenticates the event bus. With a cluster of two servers, the
 * stack follows the one left when the other is killed.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { connect, nkeys, type NatsConnection } from "nats";
import { freePort } from "#cli/supervisor";
import { background, withNamespace } from "#libs/context";
import { decodeEnvelope, NatsEventBus, natsConnectOptions, type Envelope } from "#libs/events";
import { unpackAny } from "#libs/proto";
import { createLogger } from "#libs/log";
import { startStack, waitFor, type Stack } from "../harness";
import { flotilla, flotillaOk } from "../helpers/flotilla";
import { startNatsServer, type NatsServer } from "../helpers/nats";

/** The namespace a /namespaces/create envelope names. */
const unpackName = (env: Envelope): string => (env.topic === "/namespaces/create" ? unpackAny<{ name: string }>(env.event).name : "");

describe("NATS outside the stack: TLS, credentials, a cluster's URLs (issue 14)", () => {
  let dir: string;
  let certs: string;
  let nats: NatsServer;
  let stack: Stack;
  let sub: NatsConnection;
  let url: string;
  const client = (): Record<string, string> => ({
    user: "flotilla", password: "s3cret pass",
    tls_ca: path.join(certs, "ca.pem"), tls_cert: path.join(certs, "client.pem"), tls_key: path.join(certs, "client-key.pem"),
  });

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "flt-nats-"));
    certs = path.join(dir, "certs");
    await flotillaOk(["certs", "init", certs]);
    const port = await freePort();
    nats = await startNatsServer({ dir: path.join(dir, "nats"), host: "127.0.0.1", port, certs, user: "flotilla", password: "s3cret pass" });
    // The first URL of the "cluster" answers nothing: the processes go on to the next.
    url = `nats://127.0.0.1:${await freePort()},nats://localhost:${port}`;
    stack = await startStack({ natsUrl: url, natsToml: Object.entries(client()).map(([k, v]) => `${k} = ${JSON.stringify(v)}`) });
    sub = await connect({ ...natsConnectOptions(url, client()), name: "test-subscriber" });
  });

  after(async () => {
    await sub?.close().catch(() => undefined);
    await stack?.stop();
    await nats?.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  test("certs init makes nats-server's pair and prints the [flotilla.nats] TLS lines", async () => {
    const again = await flotillaOk(["certs", "init", path.join(dir, "again")]);
    assert.ok(fs.existsSync(path.join(dir, "again", "nats.pem")));
    assert.match(again.stdout, /\[flotilla\.nats\][^[]*tls_ca = [^[]*tls_cert = [^[]*client\.pem/);
  });

  test("ctr's changes are published over TLS with credentials: a subscriber of that server and ctr events see them", async () => {
    const seen: Envelope[] = [];
    const s = sub.subscribe("flotilla.events.>", { callback: (_e, m) => seen.push(decodeEnvelope(m.data)) });
    await sub.flush();
    const events = stack.ctrSpawn(["events"]);
    let out = "";
    events.stdout!.on("data", (b: Buffer) => (out += b.toString()));
    try {
      // ctr events subscribes through the gateway: create namespaces until one shows there.
      let i = 0;
      await waitFor("ctr events to show a namespace created", async () => {
        const r = await stack.ctr(["namespaces", "create", `nats-tls-${i++}`]);
        assert.equal(r.code, 0, r.stderr);
        return out.includes("/namespaces/create") ? true : undefined;
      }, 30000, 300);
      await waitFor("the subscriber to see the same", () => (seen.some((e) => e.topic === "/namespaces/create") ? true : undefined), 10000);
    } finally {
      s.unsubscribe();
      events.kill("SIGKILL");
    }
    assert.match(stack.logs(), /"msg":"connected to NATS"/);
    assert.doesNotMatch(stack.logs(), /"msg":"embedded nats-server"/);
  });

  test("a wrong password or no client certificate is refused by the server (the same options otherwise)", async () => {
    await assert.rejects(connect({ ...natsConnectOptions(url, { ...client(), password: "wrong" }), reconnect: false }), /Authorization/i);
    const { tls_cert: _c, tls_key: _k, ...noCert } = client();
    await assert.rejects(connect({ ...natsConnectOptions(url, noCert), reconnect: false }));
  });

  test("an nkey seed file authenticates the event bus", async () => {
    const user = nkeys.createUser();
    const seedFile = path.join(dir, "user.nk");
    fs.writeFileSync(seedFile, new TextDecoder().decode(user.getSeed()) + "\n", { mode: 0o600 });
    const port = await freePort();
    const nk = await startNatsServer({ dir: path.join(dir, "nats-nkey"), host: "127.0.0.1", port, nkeys: [user.getPublicKey()] });
    const log = createLogger("test", "silent");
    const buses = [
      new NatsEventBus({ url: `nats://127.0.0.1:${port}`, client: { nkey_seed_file: seedFile }, prefix: "flt.nk", log, name: "nk-pub" }),
      new NatsEventBus({ url: `nats://127.0.0.1:${port}`, client: { nkey_seed_file: seedFile }, prefix: "flt.nk", log, name: "nk-sub" }),
    ];
    try {
      const got: Envelope[] = [];
      buses[1]!.subscribe((env) => got.push(env));
      await waitFor("an event through the nkey-authenticated buses", async () => {
        await buses[0]!.publish(withNamespace(background(), "nk"), "/namespaces/create", "containerd.events.NamespaceCreate", { name: "nk", labels: {} });
        return got.length ? true : undefined;
      }, 15000, 200);
      assert.equal(got[0]!.namespace, "nk");
      // Without the seed the server refuses.
      await assert.rejects(connect({ servers: `nats://127.0.0.1:${port}`, reconnect: false }), /Authorization/i);
    } finally {
      for (const b of buses) await b.close();
      await nk.stop();
    }
  });
});

describe("a NATS cluster of two servers: the stack follows the one left when the other dies", () => {
  test("events keep flowing to ctr events and to a subscriber after one member is killed", async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "flt-nats-cluster-"));
    const [c1, c2, r1, r2] = [await freePort(), await freePort(), await freePort(), await freePort()];
    const route = (p: number): string => `nats-route://127.0.0.1:${p}`;
    const servers: NatsServer[] = [];
    let stack: Stack | undefined;
    try {
      servers.push(await startNatsServer({ dir: path.join(dir, "n1"), host: "127.0.0.1", port: c1, token: "cluster-tok", cluster: { name: "flt", port: r1, routes: [route(r2)] } }));
      servers.push(await startNatsServer({ dir: path.join(dir, "n2"), host: "127.0.0.1", port: c2, token: "cluster-tok", cluster: { name: "flt", port: r2, routes: [route(r1)] } }));
      const url = `nats://127.0.0.1:${c1},nats://127.0.0.1:${c2}`;
      stack = await startStack({ natsUrl: url, natsToml: ['token = "cluster-tok"'] });
      const s = stack;
      // A subscriber on the member that stays.
      const sub = await connect({ ...natsConnectOptions(`nats://127.0.0.1:${c2}`, { token: "cluster-tok" }) });
      const seen: string[] = [];
      sub.subscribe("flotilla.events.>", { callback: (_e, m) => seen.push(unpackName(decodeEnvelope(m.data))) });
      await sub.flush();
      const events = s.ctrSpawn(["events"]);
      let out = "";
      events.stdout!.on("data", (b: Buffer) => (out += b.toString()));
      try {
        const created = async (name: string): Promise<void> => {
          let i = 0;
          await waitFor(`ctr events and the subscriber to see ${name}`, async () => {
            const r = await s.ctr(["namespaces", "create", `${name}-${i++}`]);
            assert.equal(r.code, 0, r.stderr);
            return out.includes(name) && seen.some((n) => n.startsWith(name)) ? true : undefined;
          }, 30000, 300);
        };
        await created("before-kill");
        await servers[0]!.stop();
        await created("after-kill");
      } finally {
        events.kill("SIGKILL");
        await sub.close();
      }
    } finally {
      await stack?.stop();
      for (const n of servers) await n.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("the embedded nats-server: port, address and store from the config, printed, with the config's token", () => {
  test("flotilla up starts it where the config says and the services authenticate with the token", async () => {
    const port = await freePort();
    const store = fs.mkdtempSync(path.join(os.tmpdir(), "flt-nats-store-"));
    const stack = await startStack({ natsToml: [`embedded_port = ${port}`, `embedded_store_dir = ${JSON.stringify(store)}`, `token = "tok-${port}"`] });
    try {
      const line = stack.logs().split("\n").find((l) => l.includes('"msg":"embedded nats-server"'));
      assert.ok(line, stack.logs().slice(-2000));
      const j = JSON.parse(line) as { address: string; port: number; store: string; url: string };
      assert.deepEqual([j.address, j.port, j.store, j.url], ["127.0.0.1", port, store, `nats://127.0.0.1:${port}`]);
      assert.equal(stack.natsUrl, `nats://127.0.0.1:${port}`);
      // The server takes only the token; the services got in (ctr events sees a change).
      await assert.rejects(connect({ servers: stack.natsUrl, reconnect: false }), /Authorization/i);
      const nc = await connect({ ...natsConnectOptions(stack.natsUrl, { token: `tok-${port}` }) });
      const seen: string[] = [];
      nc.subscribe("flotilla.events.>", { callback: (_e, m) => seen.push(decodeEnvelope(m.data).topic) });
      await nc.flush();
      const r = await stack.ctr(["namespaces", "create", "embedded-tok"]);
      assert.equal(r.code, 0, r.stderr);
      await waitFor("the namespace event", () => (seen.includes("/namespaces/create") ? true : undefined), 15000);
      await nc.close();
      assert.ok(fs.existsSync(path.join(store, "jetstream")), "JetStream store in embedded_store_dir");
    } finally {
      await stack.stop();
      fs.rmSync(store, { recursive: true, force: true });
    }
  });

  test("config check refuses two kinds of credentials; up --only refuses to start without a NATS url", async () => {
    const d = fs.mkdtempSync(path.join(os.tmpdir(), "flt-nats-cfg-"));
    try {
      const bad = path.join(d, "bad.toml");
      fs.writeFileSync(bad, '[flotilla.nats]\nurl = ["nats://a:4222", "nats://b:4222"]\ntoken = "t"\nuser = "u"\n');
      const r = await flotilla(["config", "check", "-c", bad]);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /\[flotilla\] nats: one kind of credentials at most \(got user\/password, token\)/);
      const only = path.join(d, "only.toml");
      fs.writeFileSync(only, `root = ${JSON.stringify(path.join(d, "root"))}\nstate = ${JSON.stringify(path.join(d, "state"))}\n`);
      const u = await flotilla(["up", "--only", "content,images", "-c", only], { timeoutMs: 30000 });
      assert.equal(u.code, 1);
      assert.match(u.stderr, /up --only: set \[flotilla\.nats\] url/);
    } finally {
      fs.rmSync(d, { recursive: true, force: true });
    }
  });
});
