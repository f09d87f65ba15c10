/**
 * The lint rules of eslint.config.mjs, run through ESLint's Node API (the same configuration `npm run
 * lint` uses) on in-memory files placed where a real file would be: a service importing another
 * service's files is reported, its published module and libs are not; libs may not import services;
 * no `any` in handlers, no `export *` in libs index files, no `../../../` imports.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import * as path from "node:path";
import { ESLint, type Linter } from "eslint";
import { repoRoot } from "#libs/proto";

const ROOT = repoRoot();
const eslint = new ESLint({ cwd: ROOT });

/** The messages ESLint reports for `code` as if it were the file at `file` (repository-relative). */
async function lint(file: string, code: string): Promise<Linter.LintMessage[]> {
  const [result] = await eslint.lintText(code, { filePath: path.join(ROOT, file) });
  const fatal = result.messages.filter((m) => m.fatal);
  assert.deepEqual(fatal, [], `${file} did not parse`);
  return result.messages;
}

function rules(messages: Linter.LintMessage[]): string[] {
  return messages.map((m) => `${m.line}:${m.ruleId}`);
}

const BOUNDARY = "import-x/no-restricted-paths";

/**
 * A probe module importing `name` from each `spec` and exporting it. Specifiers are never written after
 * `from` in this source: the alias rewriter of the build (tsc-alias) and scripts/codemod-aliases.mjs
 * rewrite that shape wherever it appears, string literals included.
 */
function probe(...imports: Array<[name: string, spec: string]>): string {
  const lines = imports.map(([name, spec]) => `import { ${name} } from ${JSON.stringify(spec)};`);
  return [...lines, `export const probe = [${imports.map(([name]) => name).join(", ")}];`, ""].join("\n");
}

test("a service importing another service's src is reported", async () => {
  const msgs = await lint("services/gateway/src/__probe.ts", probe(["toInfo", "../../content/src/local/db"]));
  assert.deepEqual(rules(msgs), [`1:${BOUNDARY}`]);
  assert.match(msgs[0].message, /services\/<name>\/public/);
});

test("the same import written with the #services alias is reported too", async () => {
  const msgs = await lint("services/gateway/src/__probe.ts", probe(["toInfo", "#services/content/src/local/db"]));
  assert.deepEqual(rules(msgs), [`1:${BOUNDARY}`]);
});

test("another service's public module, the service's own files and libs pass", async () => {
  const msgs = await lint(
    "services/gateway/src/__probe.ts",
    probe(["content", "../../content/public"], ["loadConfig", "../../../libs/config"], ["errNotFound", "#libs/errdefs"], ["ReadViews", "./views"]),
  );
  // Line 2 climbs three folders: only the deep-import rule speaks, never the boundary rule.
  assert.deepEqual(rules(msgs), ["2:no-restricted-imports"]);
});

test("libs importing a service or the cli is reported", async () => {
  const msgs = await lint("libs/__probe.ts", probe(["toInfo", "../services/content/src/local/db"], ["main", "../cli/main"]));
  assert.deepEqual(rules(msgs), [`1:${BOUNDARY}`, `2:${BOUNDARY}`]);
});

test("the cli importing a service's files is reported", async () => {
  const msgs = await lint("cli/__probe.ts", probe(["toInfo", "../services/content/src/local/db"]));
  assert.deepEqual(rules(msgs), [`1:${BOUNDARY}`]);
});

test("tests are exempt from the boundaries", async () => {
  const msgs = await lint("test/content/__probe.test.ts", probe(["toInfo", "../../services/content/src/local/db"]));
  assert.deepEqual(rules(msgs), []);
});

test("any in a handler is reported, outside handlers it is not", async () => {
  const code = "export function handler(req: any): unknown {\n  return req;\n}\n";
  assert.deepEqual(rules(await lint("services/content/src/server/__probe.ts", code)), ["1:@typescript-eslint/no-explicit-any"]);
  assert.deepEqual(rules(await lint("libs/grpc/__probe.ts", code)), ["1:@typescript-eslint/no-explicit-any"]);
  assert.deepEqual(rules(await lint("services/content/src/local/__probe.ts", code)), []);
});

test("export * in a libs index file is reported", async () => {
  const msgs = await lint("libs/__probe/index.ts", ["export * ", 'from "../service/plugins";\n', "export { notifyReady } ", 'from "../service/notify";\n'].join(""));
  assert.deepEqual(rules(msgs), ["1:no-restricted-syntax"]);
});

test("imports climbing three or more folders are reported everywhere", async () => {
  const code = probe(["loadConfig", "../../../libs/config"]);
  assert.deepEqual(rules(await lint("services/content/src/local/__probe.ts", code)), ["1:no-restricted-imports"]);
  assert.deepEqual(rules(await lint("test/content/x/__probe.test.ts", code)), ["1:no-restricted-imports"]);
});
