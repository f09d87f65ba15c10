/**
 * The build bundles every process's entry (scripts/bundle.js): what `bin/flotilla`, the supervisor, the
 * tasks process (shims), the systemd units and the compose file run is each entry's stub and the one
 * bundle beside it. Checked on the built tree: a bundle requires nothing but Node's builtins and the
 * packages left to node_modules on purpose (so no process loads our modules file by file), and a
 * service or the shim started twice with the flags it runs with reuses the code cache its first start wrote.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import { isBuiltin } from "node:module";
import * as path from "node:path";
import { repoRoot } from "#libs/proto";
import { SERVICE_NODE_FLAGS } from "#cli/supervisor";
import { DEFAULT_NODE_OPTIONS } from "#services/tasks/src/runtime/runtimes";

const ROOT = repoRoot();
const DIST = path.join(ROOT, "dist");
const { ENTRIES, EXTERNAL } = require(path.join(ROOT, "scripts", "bundle.js")) as { ENTRIES: string[]; EXTERNAL: string[] };

/** The package a bare specifier names (`@scope/name/sub` -> `@scope/name`). */
function packageOf(spec: string): string {
  const parts = spec.split("/");
  return spec.startsWith("@") ? parts.slice(0, 2).join("/") : parts[0]!;
}

test("every process's entry runs one bundle that requires only builtins and the packages left out of it", () => {
  assert.ok(ENTRIES.includes("cli/main.js") && ENTRIES.includes("services/shim/main.js"), "the cli and the shim are bundled");
  for (const rel of ENTRIES) {
    const entry = path.join(DIST, rel);
    const bundle = entry.replace(/\.js$/, ".bundle.js");
    assert.ok(fs.statSync(entry).size < 4096, `${rel} is a stub`);
    const src = fs.readFileSync(bundle, "utf8");
    assert.ok(fs.existsSync(`${bundle}.map`), `${rel}: its bundle has a source map`);
    const required = [...src.matchAll(/\brequire\("([^"]+)"\)/g)].map((m) => m[1]!);
    assert.ok(required.length > 0, `${rel}: its bundle requires builtins`);
    for (const spec of required) {
      assert.ok(isBuiltin(spec) || EXTERNAL.includes(packageOf(spec)), `${rel}: its bundle requires ${spec} from outside it`);
    }
  }
});

/** Each entry started twice as deployed: a service with `flotilla up`'s flags, the shim with the tasks process's. */
const STARTS = [
  // A config that cannot be read: the process loads its bundle, runs main and exits 1 at once.
  { dir: "services/images", flags: SERVICE_NODE_FLAGS, args: ["--config", path.join(ROOT, "no-such-dir", "config.toml")], status: 1, says: /^flotilla-images: config .*no-such-dir/m },
  { dir: "services/shim", flags: DEFAULT_NODE_OPTIONS, args: ["-v"], status: 0, says: /^containerd-shim-flotilla-v2 /m },
];

for (const s of STARTS) {
  test(`${s.dir}: the second start runs its bundle from the code cache the first start wrote`, () => {
    const dir = path.join(DIST, s.dir);
    const caches = (): string[] => fs.readdirSync(dir).filter((f) => f.startsWith(".main.") && f.endsWith(".v8cache"));
    const start = (): string => {
      const r = spawnSync(process.execPath, [...s.flags, path.join(dir, "main.js"), ...s.args], { encoding: "utf8", timeout: 60000 });
      assert.equal(r.status, s.status, r.stderr);
      return r.stdout + r.stderr;
    };
    assert.match(start(), s.says);
    assert.equal(caches().length, 1, "one code cache beside the bundle");
    const before = fs.statSync(path.join(dir, caches()[0]!));
    start();
    const after = fs.statSync(path.join(dir, caches()[0]!));
    // A cache V8 rejects is replaced (a new file renamed over it); one it takes is left as it was.
    assert.equal(after.ino, before.ino, "the second start took the cache");
    assert.equal(after.mtimeMs, before.mtimeMs);
  });
}
