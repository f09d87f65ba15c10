/** Per-RPC metrics: counted as plain numbers, exposed as Prometheus counter and histogram series. */
import * as assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Metrics } from "#libs/metrics";
import { GO_CODE_NAMES, Status } from "#libs/grpc/status";

describe("metrics - per-RPC counter and histogram", () => {
  it("counts calls by code and exposes cumulative buckets, sum and count per method", async () => {
    const m = new Metrics("unit");
    for (let i = 0; i < 3; i++) m.rpcStarted("svc.A", "Get", "unary");
    m.rpcStarted("svc.B", "Read", "server_stream");
    const watch = m.rpcStarted("svc.C", "Watch", "bidi");
    watch.received(3);
    watch.sent();
    watch.sent();
    m.rpcDone("svc.A", "Get", "unary", Status.OK, 0.0003);
    m.rpcDone("svc.A", "Get", "unary", Status.OK, 0.002);
    m.rpcDone("svc.A", "Get", "unary", Status.NOT_FOUND, 40);
    m.rpcDone("svc.B", "Read", "server_stream", Status.CANCELLED, 0.5);
    const text = await m.registry.metrics();
    const line = (re: RegExp): string => {
      const l = text.split("\n").find((x) => re.test(x));
      assert.ok(l, `a line matching ${re}`);
      return l;
    };
    assert.match(line(/^grpc_server_handled_total\{[^}]*grpc_method="Get"[^}]*grpc_code="OK"/), /flotilla_service="unit"\} 2$/);
    assert.match(line(/^grpc_server_handled_total\{[^}]*grpc_method="Get"[^}]*grpc_code="NotFound"/), / 1$/);
    assert.match(line(/^grpc_server_handled_total\{[^}]*grpc_method="Read",grpc_type="server_stream",grpc_code="Canceled"/), / 1$/);
    assert.match(line(/^grpc_server_started_total\{[^}]*grpc_method="Get"/), / 3$/);
    assert.match(line(/^grpc_server_started_total\{grpc_service="svc.C",grpc_method="Watch",grpc_type="bidi_stream"/), / 1$/);
    assert.doesNotMatch(text, /grpc_code="(NOT_FOUND|CANCELLED)"/);
    assert.match(line(/^grpc_server_msg_received_total\{grpc_service="svc.C",grpc_method="Watch",grpc_type="bidi_stream"/), / 3$/);
    assert.match(line(/^grpc_server_msg_sent_total\{grpc_service="svc.C",grpc_method="Watch",grpc_type="bidi_stream"/), / 2$/);
    assert.match(line(/^grpc_server_msg_sent_total\{grpc_service="svc.A"/), / 0$/);
    assert.doesNotMatch(text, /grpc_server_handled_total\{[^}]*grpc_method="Watch"/, "a call still running is not handled yet");
    assert.match(line(/^grpc_server_handling_seconds_bucket\{le="0.0005",[^}]*grpc_method="Get"/), / 1$/);
    assert.match(line(/^grpc_server_handling_seconds_bucket\{le="0.001",[^}]*grpc_method="Get"/), / 1$/);
    assert.match(line(/^grpc_server_handling_seconds_bucket\{le="0.0025",[^}]*grpc_method="Get"/), / 2$/);
    assert.match(line(/^grpc_server_handling_seconds_bucket\{le="30",[^}]*grpc_method="Get"/), / 2$/);
    assert.match(line(/^grpc_server_handling_seconds_bucket\{le="\+Inf",[^}]*grpc_method="Get"/), / 3$/);
    assert.match(line(/^grpc_server_handling_seconds_sum\{[^}]*grpc_method="Get"/), / 40.0023$/);
    assert.match(line(/^grpc_server_handling_seconds_count\{[^}]*grpc_method="Get"/), / 3$/);
    assert.match(line(/^grpc_server_handling_seconds_bucket\{le="0.25",[^}]*grpc_method="Read"/), / 0$/);
    assert.match(line(/^grpc_server_handling_seconds_bucket\{le="0.5",[^}]*grpc_method="Read"/), / 1$/);
    assert.match(text, /# TYPE grpc_server_handling_seconds histogram/);
    assert.match(text, /# TYPE grpc_server_handled_total counter/);
    assert.match(text, /# TYPE grpc_server_started_total counter/);
  });

  it("spells every status code as Go's codes.Code String() does", async () => {
    const m = new Metrics("unit");
    for (let c = 0; c <= 16; c++) m.rpcDone("svc", "M", "unary", c, 0.001);
    const text = await m.registry.metrics();
    const codes = text.split("\n").filter((l) => l.startsWith("grpc_server_handled_total{")).map((l) => /grpc_code="([^"]+)"/.exec(l)?.[1]);
    assert.deepEqual(codes, ["OK", "Canceled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound", "AlreadyExists", "PermissionDenied", "ResourceExhausted", "FailedPrecondition", "Aborted", "OutOfRange", "Unimplemented", "Internal", "Unavailable", "DataLoss", "Unauthenticated"]);
    assert.equal(GO_CODE_NAMES.length, 17);
  });
});
