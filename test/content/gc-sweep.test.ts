/**
 * The garbage collector's deletes carry GC_SWEEP_HEADER; a blob or ingest that a lease took after the
 * collector's last look must survive such a delete (checked in the delete's own transaction).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import { background, withHeaders, withLease } from "#libs/context";
import { GC_SWEEP_HEADER } from "#libs/core/gc";
import { ErrorCodes } from "#libs/errdefs";
import { openLocal } from "./fixtures";
import { putBlob, randomBlob, rejectsWith } from "./suite";

test("a GC sweep cannot delete leased content or abort a leased ingest; ordinary deletes can", async () => {
  const fx = await openLocal();
  try {
    const ctx = background("default");
    const sweep = withHeaders(ctx, { [GC_SWEEP_HEADER]: "1" });
    const leased = await putBlob(fx.store, withLease(ctx, "lease-1"), "leased-ref", randomBlob(4096));
    const free = await putBlob(fx.store, ctx, "free-ref", randomBlob(4096));
    await rejectsWith(fx.store.delete(sweep, leased), ErrorCodes.FailedPrecondition, /is leased/);
    assert.ok((await fx.store.info(ctx, leased)).size === 4096, "still there");
    await fx.store.delete(sweep, free);
    await rejectsWith(fx.store.info(ctx, free), ErrorCodes.NotFound);
    await fx.store.delete(ctx, leased); // a user's delete is not refused
    await rejectsWith(fx.store.info(ctx, leased), ErrorCodes.NotFound);
  } finally {
    await fx.close();
    fs.rmSync(fx.root, { recursive: true, force: true });
  }
});
