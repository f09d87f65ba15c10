import { test } from "node:test";
import assert from "node:assert/strict";
import { status } from "@grpc/grpc-js";
import { causeText, errConflict, errFailedPrecondition, errNotFound, errUnavailable, fromGrpc, toGrpc, ErrorCodes, errorCode } from "#libs/errdefs";

test("messages are shaped like containerd's", () => {
  assert.equal(errNotFound('image "x"').message, 'image "x": not found');
});

test("one mapping each way, with containerd's code table", () => {
  const cases: [Error, number][] = [
    [errNotFound("a"), status.NOT_FOUND],
    [errConflict("b"), status.FAILED_PRECONDITION],
    [errFailedPrecondition("c"), status.FAILED_PRECONDITION],
    [errUnavailable("d"), status.UNAVAILABLE],
    [new Error("boom"), status.UNKNOWN],
  ];
  for (const [err, code] of cases) assert.equal(toGrpc(err).code, code, err.message);
  const back = fromGrpc({ code: status.FAILED_PRECONDITION, details: "b: conflict", message: "" });
  assert.equal(errorCode(back), ErrorCodes.Conflict);
  const nf = fromGrpc({ code: status.NOT_FOUND, details: 'namespace "x"', message: "" }) as Error;
  assert.equal(errorCode(nf), ErrorCodes.NotFound);
  assert.equal(nf.message, 'namespace "x": not found');
  assert.equal(causeText(nf), 'namespace "x"');
  // a status error passes through unchanged
  assert.deepEqual(toGrpc({ code: status.RESOURCE_EXHAUSTED, details: "too big", message: "x" }), { code: status.RESOURCE_EXHAUSTED, details: "too big", message: "too big" });
});
