/** libs/time: the one converter between Dates, Timestamps and stored times keeps nanoseconds. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { dateFromStored, fromTimestamp, nanosOf, nowNanos, storedTime, toTimestamp } from "#libs/time";
import { decode, encode } from "#libs/proto";

test("a Timestamp goes through a Date, a stored time and the wire without losing a nanosecond", () => {
  const ts = { seconds: 1_765_000_000, nanos: 486_271_227 };
  const d = fromTimestamp(ts)!;
  assert.equal(d.toISOString(), "2025-12-06T05:46:40.486Z");
  assert.equal(d.toPreciseISOString(), "2025-12-06T05:46:40.486271227Z");
  assert.deepEqual(toTimestamp(d), ts);
  assert.deepEqual(toTimestamp(dateFromStored(storedTime(d))), ts);
  const wire = decode<{ timestamp: { seconds: number; nanos: number } }>("containerd.types.Envelope", encode("containerd.types.Envelope", { timestamp: toTimestamp(d) }));
  assert.deepEqual(fromTimestamp(wire.timestamp)!.toPreciseISOString(), d.toPreciseISOString());
});

test("records written before (milliseconds, a number) still read", () => {
  assert.deepEqual(toTimestamp(dateFromStored(1_765_000_000_486)), { seconds: 1_765_000_000, nanos: 486_000_000 });
  assert.equal(nanosOf(new Date(1_765_000_000_486)), 1_765_000_000_486_000_000n);
});

test("the clock reads nanoseconds, agrees with Date.now() to the millisecond and never repeats", () => {
  let prev = 0n;
  let subMs = 0;
  for (let i = 0; i < 1000; i++) {
    const before = BigInt(Date.now());
    const n = nowNanos();
    const after = BigInt(Date.now());
    assert.ok(n / 1_000_000n >= before && n / 1_000_000n <= after + 1n, `${n} within [${before}, ${after}] ms`);
    assert.ok(n > prev);
    if (n % 1_000_000n !== 0n) subMs++;
    prev = n;
  }
  assert.ok(subMs > 900, `${subMs} of 1000 readings have sub-millisecond nanoseconds`);
});
