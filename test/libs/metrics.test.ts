/** Per-RPC metrics: counted as plain numbers, exposed as Prometheus counter and histogram series. */
import * as assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Metrics } from "../../libs/metrics";

describe("metrics - per-RPC counter and histogram", () => {
  it("counts calls by code and exposes cumulative buckets, sum and count per method", async () => {
    const m = new Metrics("unit");
    m.rpcDone("svc.A", "Get", "unary", "OK", 0.0003);
    m.rpcDone("svc.A", "Get", "unary", "OK", 0.002);
    m.rpcDone("svc.A", "Get", "unary", "NOT_FOUND", 40);
    m.rpcDone("svc.B", "Read", "server_stream", "CANCELLED", 0.5);
    const text = await m.registry.metrics();
    const line = (re: RegExp): string => {
      const l = text.split("\n").find((x) => re.test(x));
      assert.ok(l, `a line matching ${re}`);
      return l;
    };
    assert.match(line(/^grpc_server_handled_total\{[^}]*grpc_method="Get"[^}]*grpc_code="OK"/), /flotilla_service="unit"\} 2$/);
    assert.match(line(/^grpc_server_handled_total\{[^}]*grpc_method="Get"[^}]*grpc_code="NOT_FOUND"/), / 1$/);
    assert.match(line(/^grpc_server_handled_total\{[^}]*grpc_method="Read",grpc_type="server_stream",grpc_code="CANCELLED"/), / 1$/);
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
  });
});
