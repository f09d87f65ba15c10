/** libs/sys/deflate: libdeflate's whole-buffer gunzip, and what it leaves to zlib. */
import { test } from "node:test";
import assert from "node:assert/strict";
import * as crypto from "node:crypto";
import * as zlib from "node:zlib";
import { gunzipWhole, gzipTrailerSize, haveLibdeflate } from "#libs/sys/deflate";

test("libdeflate: a gzip member inflates to the same bytes zlib gives; what it cannot take is said", () => {
  assert.ok(haveLibdeflate(), "libdeflate.so.0 loads (scripts/install-deps.sh installs libdeflate0)");
  const data = Buffer.concat([crypto.randomBytes(300_000), Buffer.alloc(500_000, 7)]);
  const gz = zlib.gzipSync(data);
  assert.equal(gzipTrailerSize(gz), data.length);
  const out = Buffer.alloc(data.length);
  assert.deepEqual(gunzipWhole(gz, out), { ok: true, size: data.length });
  assert.ok(out.equals(data));
  assert.deepEqual(gunzipWhole(gz, Buffer.alloc(data.length - 1)), { ok: false, why: "space" });
  assert.deepEqual(gunzipWhole(Buffer.concat([gz, zlib.gzipSync(Buffer.from("x"))]), Buffer.alloc(data.length + 10)), { ok: false, why: "more" });
  const bad = Buffer.from(gz);
  bad[bad.length - 6] ^= 0xff; // the CRC
  assert.deepEqual(gunzipWhole(bad, Buffer.alloc(data.length)), { ok: false, why: "bad" });
  assert.deepEqual(gunzipWhole(Buffer.alloc(100, 0x41), Buffer.alloc(1000)), { ok: false, why: "bad" });
});
