/**
 * The import rules of ARCHITECTURE.md, read from the sources: libs never import a service, and a
 * service imports another service only through that service's published module
 * (`services/<owner>/public`), never its `src/` or `main.ts`.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { repoRoot } from "#libs/proto";

const ROOT = repoRoot();
const SPECIFIER = /(?:\bfrom\s*|\bimport\s*\(\s*|\brequire\s*\(\s*|^\s*import\s+)"([^"]+)"/gm;

/** Every relative or aliased (`#libs/...`, `#services/...`) import of the .ts files under `top`: importing file and imported path, both relative to the repo. */
function imports(top: string): { from: string; to: string }[] {
  const out: { from: string; to: string }[] = [];
  const dir = path.join(ROOT, top);
  for (const f of fs.readdirSync(dir, { recursive: true, encoding: "utf8" }).filter((n) => n.endsWith(".ts")).map((n) => path.join(dir, n))) {
    for (const m of fs.readFileSync(f, "utf8").matchAll(SPECIFIER)) {
      const spec = m[1]!;
      if (spec.startsWith(".")) out.push({ from: path.relative(ROOT, f), to: path.relative(ROOT, path.resolve(path.dirname(f), spec)) });
      else if (spec.startsWith("#")) out.push({ from: path.relative(ROOT, f), to: path.normalize(spec.slice(1)) });
    }
  }
  return out;
}

test("libs import no service", () => {
  const all = imports("libs");
  assert.ok(all.length > 100, `read the imports of libs (${all.length})`);
  const bad = all.filter((i) => i.to.split(path.sep)[0] === "services");
  assert.deepEqual(bad, []);
});

test("a service imports another service only through its public module", () => {
  const all = imports("services");
  const across = all.filter((i) => i.to.split(path.sep)[0] === "services" && i.to.split(path.sep)[1] !== i.from.split(path.sep)[1]);
  const bad = across.filter((i) => i.to.split(path.sep)[2] !== "public");
  assert.deepEqual(bad, []);
  // The gateway's read views use the four published modules (the rule above is not vacuous).
  const owners = new Set(across.filter((i) => i.from.startsWith(path.join("services", "gateway"))).map((i) => i.to.split(path.sep)[1]));
  assert.deepEqual([...owners].sort(), ["content", "images", "snapshots", "tasks"]);
});
