/** Runs every compiled test file (dist/test/**\/*.test.js) with node's test runner, one file at a time. */
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";

function find(dir: string): string[] {
  const out: string[] = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...find(p));
    else if (e.name.endsWith(".test.js")) out.push(p);
  }
  return out;
}

const only = process.argv.slice(2);
const files = find(__dirname).filter((f) => only.length === 0 || only.some((o) => f.includes(o))).sort();
const r = spawnSync(process.execPath, ["--test", "--test-concurrency=1", "--test-timeout=300000", ...files], { stdio: "inherit" });
process.exit(r.status ?? 1);
