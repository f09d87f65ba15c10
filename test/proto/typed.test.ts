/**
 * The wire types generated from proto/ (scripts/gen-proto-types.js, run by `npm run build`) make a
 * wrong field name a compile error: in what a gRPC or ttrpc handler returns or sends, in what a client
 * sends, and in a method or service name. Each check compiles a small fixture with the repository's own tsc
 * against the real libs; a correct fixture must compile, so a failure is never the fixture's setup.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { repoRoot } from "#libs/proto";

const ROOT = repoRoot();
const TSC = path.join(ROOT, "node_modules", "typescript", "bin", "tsc");

/** Imports and set-up every fixture shares (absolute paths to the libs' sources). */
const PRELUDE = `
import { RpcServer, serviceHandlers } from ${JSON.stringify(path.join(ROOT, "libs/grpc/server"))};
import { RpcClient, type Channel } from ${JSON.stringify(path.join(ROOT, "libs/grpc/client"))};
import { typedService, TypedClient } from ${JSON.stringify(path.join(ROOT, "libs/ttrpc/typed"))};
import type { TtrpcClient } from ${JSON.stringify(path.join(ROOT, "libs/ttrpc/client"))};
import { background } from ${JSON.stringify(path.join(ROOT, "libs/context"))};
declare const server: RpcServer;
declare const ttrpc: TtrpcClient;
declare const nowhere: Channel;
const NS = "containerd.services.namespaces.v1.Namespaces";
const CONTENT = "containerd.services.content.v1.Content";
const SANDBOX = "containerd.runtime.sandbox.v1.Sandbox";
export async function fixture(): Promise<void> {
  const ctx = background("default");
`;

/** Correct use of every typed door: must compile. */
const GOOD = `
  server.addService(NS, {
    Get: async (_ctx, req) => ({ namespace: { name: req.name, labels: { a: "b" } } }),
    List: async () => ({ namespaces: [] }),
  });
  server.addService(CONTENT, {
    Read: async (_ctx, req, send) => { await send({ offset: req.offset, data: Buffer.alloc(1) }); },
  });
  serviceHandlers(CONTENT, { Info: async (_ctx, req) => ({ info: { digest: req.digest, size: 1 } }) });
  typedService(SANDBOX, { PingSandbox: async () => ({}), StartSandbox: async () => ({ pid: 1 }) });
  const c = new RpcClient(nowhere, NS);
  const r = await c.unary(ctx, "Get", { name: "x" });
  const name: string | undefined = r.namespace?.name;
  for await (const m of new RpcClient(nowhere, CONTENT).serverStream(ctx, "Read", { digest: "d", offset: 0 })) void m.data.length;
  const w = new RpcClient(nowhere, CONTENT).bidi(ctx, "Write");
  await w.send({ action: 1, ref: "r", total: "12" });
  const t = await new TypedClient(ttrpc, SANDBOX).call("StartSandbox", { sandbox_id: "s" });
  void [name, t.pid];
  const untyped = new RpcClient<string>(nowhere, "any.Service");
  void untyped.unary(ctx, "Anything", { whatever: 1 });
`;

/** One wrong field or method per line; `// expect: <name>` is what the error must name. */
const BAD = `
  server.addService(NS, { Get: async (_ctx, req) => ({ namespace: { name: req.name, lables: {} } }) }); // expect: lables
  server.addService(NS, { List: async () => ({ namespace: [] }) }); // expect: namespace
  server.addService(CONTENT, { Read: async (_ctx, req, send) => { await send({ ofset: req.offset }); } }); // expect: ofset
  server.addService(NS, { Gett: async () => ({}) }); // expect: Gett
  server.addService(NS, { Get: async (_ctx, req) => ({ namespace: { name: req.nam } }) }); // expect: nam
  serviceHandlers(CONTENT, { Info: async () => ({ info: { digest: "d", sise: 1 } }) }); // expect: sise
  typedService(SANDBOX, { StartSandbox: async () => ({ pid: 1, started: true }) }); // expect: started
  await new RpcClient(nowhere, NS).unary(ctx, "Get", { nmae: "x" }); // expect: nmae
  await new RpcClient(nowhere, NS).unary(ctx, "Gte", { name: "x" }); // expect: Gte
  void (await new RpcClient(nowhere, NS).unary(ctx, "Get", { name: "x" })).namespaces; // expect: namespaces
  await new RpcClient(nowhere, CONTENT).bidi(ctx, "Write").send({ action: 1, reff: "r" }); // expect: reff
  await new TypedClient(ttrpc, SANDBOX).call("StartSandbox", { sandboxid: "s" }); // expect: sandboxid
  void new RpcClient(nowhere, "containerd.services.content.v1.Contnt"); // expect: Contnt
`;

let dir: string;
let result: { code: number; out: string };

/** Compile both fixtures in one tsc run (about as long as one). */
function compileFixtures(): { code: number; out: string } {
  const files = [["good", GOOD], ["bad", BAD]].map(([name, body]) => {
    const file = path.join(dir, `${name}.ts`);
    fs.writeFileSync(file, `${PRELUDE}${body}}\n`);
    return file;
  });
  const r = spawnSync(process.execPath, [
    TSC, "--noEmit", "--pretty", "false", "--strict", "--target", "ES2022", "--module", "commonjs", "--moduleResolution", "node",
    "--esModuleInterop", "--skipLibCheck", "--types", "node", "--typeRoots", path.join(ROOT, "node_modules", "@types"), ...files,
  ], { encoding: "utf8", cwd: dir, timeout: 240_000 });
  return { code: r.status ?? -1, out: `${r.stdout}${r.stderr}` };
}

/** The first line of a fixture's body in its file (1-based). */
const FIRST_LINE = PRELUDE.split("\n").length;

describe("proto - generated wire types", () => {
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "flotilla-typed-"));
    result = compileFixtures();
  });
  after(() => {
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("correct handlers and calls compile", () => {
    assert.ok(result.out.includes("bad.ts("), `tsc did not check the fixtures:\n${result.out}`);
    const good = result.out.split("\n").filter((l) => l.includes("good.ts("));
    assert.deepEqual(good, [], result.out);
  });

  it("a wrong field or method name fails to compile, naming it, on its own line", () => {
    assert.notEqual(result.code, 0, "the bad fixture compiled");
    const out = result.out;
    const errors = out.split("\n").filter((l) => /^\S*bad\.ts\(\d+,\d+\): error TS/.test(l));
    const lines = BAD.split("\n");
    const seen = new Set<number>();
    let expected = 0;
    for (let i = 0; i < lines.length; i++) {
      const m = /\/\/ expect: (\w+)$/.exec(lines[i]!);
      if (!m) continue;
      expected++;
      const line = FIRST_LINE + i;
      seen.add(line);
      const here = errors.filter((e) => e.includes(`bad.ts(${line},`));
      assert.ok(here.length > 0, `no error on line ${line} (${lines[i]!.trim()}):\n${out}`);
      // The name is in the error or in the lines that elaborate it (up to the next error).
      const texts = here.map((e) => {
        const at = out.indexOf(e);
        const next = out.indexOf(": error TS", at + e.length);
        return out.slice(at, next < 0 ? undefined : out.lastIndexOf("\n", next));
      });
      assert.ok(texts.some((t) => new RegExp(`\\b${m[1]}\\b`).test(t)), `the error on line ${line} does not name ${m[1]}:\n${texts.join("\n")}`);
    }
    assert.equal(expected, 13);
    const stray = errors.filter((e) => !seen.has(Number(/bad\.ts\((\d+),/.exec(e)![1])));
    assert.deepEqual(stray, [], "errors on lines with nothing wrong");
  });
});
