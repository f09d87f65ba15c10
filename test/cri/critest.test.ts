/**
 * The Kubernetes CRI conformance suite (cri-tools v1.26.0 critest) against `bin/flotilla up`'s gateway
 * socket, through the conformance kit's own runner: a fresh docker-registry on a free loopback port
 * with the fixture images (`START_REGISTRY=1`), the kit's registry mirrors rewritten to that port, the
 * kit's CRI config tables. The passed count must not fall below what Flotilla reaches (MIN_PASSED);
 * every failing spec is printed. containerd 1.6.20 passes 79 of 80 on this machine (kit README).
 *
 * critest uses host ports 12000-12003 (hostPort and hostNetwork specs): only this test runs it.
 */
import { after, before, describe, it } from "node:test";
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { freePort } from "#cli/supervisor";
import { runCommand } from "#test/harness";
import { CRI_KIT, mirrorHosts, startCriStack, type CriStack } from "./helpers";

/** The passed count Flotilla reaches today; raise it as specs start passing, never lower it. */
const MIN_PASSED = Number(process.env.CRITEST_MIN_PASSED ?? 79);
const TIMEOUT_MS = 20 * 60_000;

describe("critest (CRI conformance)", { timeout: TIMEOUT_MS + 120_000 }, () => {
  let stack: CriStack;
  let registry: string;
  let hostsDir: string;

  before(async () => {
    registry = `127.0.0.1:${await freePort()}`;
    hostsDir = fs.mkdtempSync(path.join(process.env.TMPDIR ?? "/tmp", "flt-critest-hosts-"));
    stack = await startCriStack({ registryConfigPath: mirrorHosts(hostsDir, registry) });
  });

  after(async () => {
    await stack?.stop();
    if (hostsDir) fs.rmSync(hostsDir, { recursive: true, force: true });
  });

  it(`passes at least ${MIN_PASSED} conformance specs`, async () => {
    const scratch = fs.mkdtempSync(path.join(process.env.TMPDIR ?? "/tmp", "flt-critest-"));
    try {
      const r = await runCommand(path.join(CRI_KIT, "run-critest.sh"), [stack.socket], {
        env: { START_REGISTRY: "1", REGISTRY: registry, SCRATCH: scratch, CRITEST_TIMEOUT: `${Math.floor(TIMEOUT_MS / 60_000) - 1}m` },
        timeoutMs: TIMEOUT_MS,
      });
      const out = r.stdout + r.stderr;
      const summary = /^(\d+) passed, (\d+) failed, (\d+) skipped$/m.exec(out);
      const failures = out.split("\n").filter((l) => l.startsWith("FAILED "));
      // What a reader of the test log needs: the count and each failing spec.
      process.stdout.write(`critest: ${summary ? `${summary[1]} passed / ${summary[2]} failed / ${summary[3]} skipped` : "no summary"}\n`);
      for (const f of failures) process.stdout.write(`${f}\n`);
      assert.ok(summary, `run-critest.sh printed no summary (exit ${r.code}):\n${out.slice(-4000)}`);
      const passed = Number(summary[1]);
      assert.ok(passed >= MIN_PASSED, `critest passed ${passed}, expected at least ${MIN_PASSED}:\n${failures.join("\n")}`);
    } finally {
      fs.rmSync(scratch, { recursive: true, force: true });
    }
  });
});
