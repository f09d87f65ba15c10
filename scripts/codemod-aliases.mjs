#!/usr/bin/env node
// Rewrites relative imports that climb two or more folders out of their own part of the tree into the
// path aliases of tsconfig.json (#libs/..., #services/..., #cli/..., #test/...). A "part" is one of
// libs, cli, test, bench, or one service (services/<name>). Covers `import ... from`, `export ... from`,
// side-effect `import "..."`, `import("...")` (also in types) and `require("...")`. Idempotent.
//
//   node scripts/codemod-aliases.mjs            rewrite in place, print what changed per file
//   node scripts/codemod-aliases.mjs --check    change nothing; exit 1 if something would change
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const SCAN = ["libs", "services", "cli", "test", "bench"];
// Parts of the tree an alias may point into (tsconfig.json compilerOptions.paths: "#<top>/*").
const ALIASED = new Set(["libs", "services", "cli", "test"]);
const check = process.argv.includes("--check");

/** The part of the tree a repository-relative posix path belongs to. */
function part(rel) {
  const seg = rel.split("/");
  return seg[0] === "services" && seg.length > 1 ? `services/${seg[1]}` : seg[0];
}

/** The alias for `spec` imported from `file` (repository-relative), or undefined to leave it alone. */
function alias(file, spec) {
  const m = /^(?:\.\.\/){2,}/.exec(spec);
  if (!m) return undefined;
  const target = path.posix.normalize(path.posix.join(path.posix.dirname(file), spec));
  const top = target.split("/")[0];
  if (!ALIASED.has(top) || target.startsWith("../")) return undefined;
  if (part(target) === part(file)) return undefined;
  return `#${target}`;
}

// A module specifier in one of the forms above: group 1 the text before it, 2 the quote, 3 the specifier.
const SPEC = /(\bfrom\s*|\bimport\s*|\bimport\(\s*|\brequire\(\s*)(["'])(\.\.\/[^"'\n]*)\2/g;

function* walk(dir) {
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) yield* walk(p);
    else if (e.name.endsWith(".ts")) yield p;
  }
}

let files = 0;
let imports = 0;
for (const top of SCAN) {
  const dir = path.join(root, top);
  if (!fs.existsSync(dir)) continue;
  for (const abs of walk(dir)) {
    const rel = path.relative(root, abs).split(path.sep).join("/");
    const src = fs.readFileSync(abs, "utf8");
    let n = 0;
    const out = src.replace(SPEC, (whole, lead, q, spec) => {
      const a = alias(rel, spec);
      if (a === undefined) return whole;
      n++;
      return `${lead}${q}${a}${q}`;
    });
    if (n === 0) continue;
    files++;
    imports += n;
    console.log(`${rel}: ${n}`);
    if (!check) fs.writeFileSync(abs, out);
  }
}
console.log(`${check ? "would rewrite" : "rewrote"} ${imports} imports in ${files} files`);
if (check && imports > 0) process.exit(1);
