/**
 * Warm shims' priority (services/tasks/src/runtime/warm.ts setShimPriority): a shim runs in a session of
 * its own, so lowering it must lower its session's autogroup as well as its nice value, and raising it
 * must bring both back.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import { setShimPriority, WARM_NICE } from "#services/tasks/src/runtime/warm";

const autogroupNice = (pid: number): number | undefined => {
  try {
    return Number(/nice (-?\d+)/.exec(fs.readFileSync(`/proc/${pid}/autogroup`, "utf8"))?.[1]);
  } catch {
    return undefined;
  }
};

test("warm pool - a detached shim-like process is lowered (nice and its session's autogroup) and raised back", async () => {
  const child = spawn("sleep", ["30"], { detached: true, stdio: "ignore" });
  try {
    const pid = child.pid!;
    const autogroups = autogroupNice(pid) !== undefined;
    setShimPriority(pid, WARM_NICE);
    assert.equal(os.getPriority(pid), WARM_NICE);
    if (autogroups) assert.equal(autogroupNice(pid), WARM_NICE, "the session's autogroup is lowered too");
    setShimPriority(pid, 0);
    assert.equal(os.getPriority(pid), 0);
    if (autogroups) assert.equal(autogroupNice(pid), 0, "and raised back");
    assert.doesNotThrow(() => setShimPriority(0, 0), "no pid: nothing to do");
  } finally {
    child.kill("SIGKILL");
  }
});
