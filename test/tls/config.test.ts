/** The across-hosts config keys (issue 15): TLS files, advertised addresses, the gateway's TCP listener, placement. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { dialAddress, fromToml } from "#libs/config";
import { tlsFor } from "#libs/grpc/tls";
import { dialHost, placementError, splitGroupError } from "#libs/topology";

test("config: [flotilla.tls], per-service tls_cert/tls_key/advertise_address and [grpc] tcp_* are read; unset means plain, as before", () => {
  const plain = fromToml({});
  assert.deepEqual(plain.flotilla.tls, { ca: "", cert: "", key: "" });
  assert.equal(plain.flotilla.services.content.tls_cert, "");
  assert.equal(plain.grpc.tcp_address, "");
  assert.equal(tlsFor(plain, "content"), undefined);
  assert.equal(tlsFor(plain), undefined);
  const c = fromToml({
    grpc: { tcp_address: "0.0.0.0:7000", tcp_tls_ca: "/c/ca.pem", tcp_tls_cert: "/c/gw.pem", tcp_tls_key: "/c/gw-key.pem" },
    flotilla: { tls: { ca: "/c/ca.pem" }, services: { content: { address: "tcp://0.0.0.0:7001", tls_cert: "/c/content.pem", tls_key: "/c/content-key.pem", advertise_address: "node1:7001" } } },
  });
  assert.deepEqual([c.grpc.tcp_address, c.grpc.tcp_tls_ca, c.grpc.tcp_tls_cert, c.grpc.tcp_tls_key], ["0.0.0.0:7000", "/c/ca.pem", "/c/gw.pem", "/c/gw-key.pem"]);
  assert.equal(c.flotilla.services.content.advertise_address, "node1:7001");
  // Named files that do not exist are a clear error, not a silent fall back to plain TCP.
  assert.throws(() => tlsFor(c, "content"), /\[flotilla\.services\.content\]: ENOENT.*ca\.pem/);
  const partial = fromToml({ flotilla: { services: { images: { tls_cert: "/c/images.pem" } } } });
  assert.throws(() => tlsFor(partial, "images"), /needs a CA, a certificate and a key \(got cert\)/);
});

test("dialAddress: the advertised address, else the listen address with an unspecified host read as 127.0.0.1", () => {
  const c = fromToml({
    state: "/s",
    flotilla: {
      services: {
        content: { address: "tcp://0.0.0.0:7001" },
        images: { address: "tcp://0.0.0.0:7002", advertise_address: "images.example:7002" },
        snapshots: { address: "[::]:7003" },
        tasks: { address: "10.1.2.3:7004" },
        transfer: { address: ":7005" },
      },
    },
  });
  assert.equal(dialAddress(c, "content"), "127.0.0.1:7001");
  assert.equal(dialAddress(c, "images"), "images.example:7002");
  assert.equal(dialAddress(c, "snapshots"), "127.0.0.1:7003");
  assert.equal(dialAddress(c, "tasks"), "10.1.2.3:7004");
  assert.equal(dialAddress(c, "transfer"), "127.0.0.1:7005");
  assert.equal(dialAddress(c, "sandbox"), "unix:///s/sandbox.sock");
});

test("placement: the node group dialled at two hosts is a config error; an up running a member away from the others is refused", () => {
  const at = (hosts: Partial<Record<"snapshots" | "tasks" | "sandbox", string>>): ReturnType<typeof fromToml> => fromToml({
    state: "/s",
    flotilla: { services: Object.fromEntries(Object.entries(hosts).map(([s, h]) => [s, { address: "tcp://0.0.0.0:7000", advertise_address: `${h}:7000` }])) },
  });
  // One host (by address or name), or unix sockets and loopback next to one host: fine.
  assert.equal(placementError(at({ snapshots: "10.0.0.2", tasks: "10.0.0.2", sandbox: "10.0.0.2" })), undefined);
  assert.equal(placementError(at({ snapshots: "node2", tasks: "node2" })), undefined);
  assert.equal(placementError(fromToml({})), undefined);
  assert.equal(placementError(at({ snapshots: "node1", tasks: "node2" })), "placement: snapshots, tasks, sandbox, cri form the node group and run on one host, but snapshots is dialled at node1 and tasks at node2");
  assert.equal(dialHost("[fd00::2]:7000"), "fd00::2");
  assert.equal(dialHost("unix:///s/tasks.sock"), undefined);
  const group = at({ snapshots: "10.0.0.2", tasks: "10.0.0.2", sandbox: "10.0.0.2" });
  // On the node: every member's address is this host's.
  assert.equal(splitGroupError(group, ["snapshots", "tasks", "sandbox"], new Set(["10.0.0.2"])), undefined);
  // Elsewhere, running no member (content, images ...): nothing to say.
  assert.equal(splitGroupError(group, ["content", "images", "gateway"], new Set(["10.0.0.1"])), undefined);
  assert.match(splitGroupError(group, ["tasks"], new Set(["10.0.0.1"])) ?? "", /^placement: tasks runs here but snapshots, of the same node group \(snapshots, tasks, sandbox, cri\), is dialled at 10\.0\.0\.2, which is not this host/);
});
