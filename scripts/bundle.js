#!/usr/bin/env node
/**
 * Bundles each process's entry point into one file: run by `npm run build` after tsc and tsc-alias.
 *
 * Loading 250-300 compiled modules (and their node_modules) file by file was most of a process's
 * start-up CPU (issue 17): each require resolves paths, stats, reads and compiles a file. Each entry
 * below is replaced IN PLACE by a bundle of itself and everything it requires (esbuild, from the
 * compiled CommonJS, so require order, cycles and lazy `require()` calls behave as they did), so the
 * paths that `bin/flotilla`, the supervisor, the tasks process (the shim), the systemd units and the
 * compose file run are the bundles, and there is no other path to fall back to.
 *
 * Native modules stay external (lmdb and what it loads, koffi): they are required from node_modules
 * at run time. Whitespace is minified, names are kept: a stack trace names the functions, and the
 * source map beside each bundle (chained to the TypeScript through tsc's maps) gives .ts files and
 * lines with `NODE_OPTIONS=--enable-source-maps`.
 */
"use strict";
const crypto = require("node:crypto");
const fs = require("node:fs");
const path = require("node:path");
const esbuild = require("esbuild");

const ROOT = path.join(__dirname, "..");
const DIST = path.join(ROOT, "dist");

/** Every process's entry (paths under dist/), and the snapshots process's worker thread. */
const ENTRIES = [
  "cli/main.js",
  ...["content", "snapshots", "images", "tasks", "transfer", "sandbox", "cri", "gateway", "shim"].map((s) => `services/${s}/main.js`),
  "services/snapshots/src/local/diff/apply-worker.js",
];

/** Packages with native code (and the packages only they load): required from node_modules. */
const NATIVE = ["lmdb", "koffi", "msgpackr", "msgpackr-extract", "node-gyp-build-optional-packages", "ordered-binary", "weak-lru-cache"];

/**
 * Packages the processes require only on demand (libs/tracing: the OTEL SDK and exporters, once an
 * OTLP endpoint is configured; libs/metrics: prom-client, at the first scrape), also left to
 * node_modules: a bundle keeps the source of everything in it in each process's heap (2.4 MiB of
 * source cost a service ~4 MiB of heap), so what a process may never run stays out of it.
 */
const ON_DEMAND = [
  "@opentelemetry/exporter-trace-otlp-http",
  "@opentelemetry/exporter-trace-otlp-proto",
  "@opentelemetry/resources",
  "@opentelemetry/sdk-trace-base",
  "@opentelemetry/sdk-trace-node",
  "@opentelemetry/semantic-conventions",
  "prom-client",
];

const EXTERNAL = [...NATIVE, ...ON_DEMAND];

/**
 * The entry's stub: runs the bundle beside it through vm.Script with V8's code cache for it, kept
 * beside it once a process has run five seconds or exits (then it holds the functions start-up compiled too),
 * under a name carrying the bundle's hash: V8 checks a cache against the source's length only.
 * Without a cache (a first start, a read-only install) it compiles the bundle as require would.
 */
const STUB_MARK = "Written by scripts/bundle.js";

function stub(bundleName, cacheName) {
  return `"use strict";
// ${STUB_MARK}: runs ${bundleName} (this entry and all it loads) with V8's code cache.
const fs = require("node:fs");
const path = require("node:path");
const vm = require("node:vm");
const file = path.join(__dirname, ${JSON.stringify(bundleName)});
const cacheFile = path.join(__dirname, ${JSON.stringify(cacheName)});
if (process.sourceMapsEnabled || process.execArgv.includes("--enable-source-maps")) {
  // Node maps stack traces only for what its loader compiles (not a vm.Script): compile it as this
  // file (the bundle's source map sits beside both), without the cache.
  module._compile(fs.readFileSync(file, "utf8"), __filename);
  return;
}
let cachedData;
try { cachedData = fs.readFileSync(cacheFile); } catch {}
const script = new vm.Script(require("node:module").wrap(fs.readFileSync(file, "utf8")), { filename: file, cachedData });
cachedData = undefined;
if (script.cachedDataRejected !== false) {
  let written = false;
  const save = () => {
    if (written) return;
    written = true;
    const tmp = cacheFile + "." + process.pid + "." + require("node:worker_threads").threadId + ".tmp";
    try { fs.writeFileSync(tmp, script.createCachedData()); fs.renameSync(tmp, cacheFile); } catch { try { fs.unlinkSync(tmp); } catch {} }
  };
  setTimeout(save, 5000).unref();
  process.once("exit", save);
}
script.runInThisContext().call(module.exports, module.exports, require, module, __filename, __dirname);
`;
}

async function bundle(rel) {
  const file = path.join(DIST, rel);
  const base = path.basename(rel, ".js");
  const bundleFile = path.join(path.dirname(file), `${base}.bundle.js`);
  // Already a stub (this step ran since tsc last wrote the entry): its bundle is up to date.
  if (fs.readFileSync(file, "utf8").includes(STUB_MARK)) return;
  const res = await esbuild.build({
    entryPoints: [file],
    outfile: bundleFile,
    bundle: true,
    platform: "node",
    target: "node20",
    format: "cjs",
    external: EXTERNAL,
    sourcemap: "linked",
    // Whitespace and syntax only: identifiers (so function and class names in stack traces and
    // `constructor.name`) stay as compiled. Each process keeps its bundle's source in its heap (V8
    // compiles functions lazily from it): 1.4 MiB of plain source cost the content process 2 MiB more
    // heap than loading the files one by one; minified (0.8 MiB) it costs what they did.
    minifyWhitespace: true,
    minifySyntax: true,
    write: false,
    allowOverwrite: true,
    logLevel: "error",
    // protobufjs's inquire evaluates `require` on purpose (optional modules): harmless in a bundle.
    logOverride: { "direct-eval": "silent" },
  });
  const write = (to, data) => {
    const tmp = `${to}.tmp${process.pid}`;
    fs.writeFileSync(tmp, data);
    fs.renameSync(tmp, to);
  };
  let hash = "";
  for (const out of res.outputFiles) {
    write(out.path, out.contents);
    if (out.path === bundleFile) hash = crypto.createHash("sha256").update(out.contents).digest("hex").slice(0, 16);
  }
  const dir = path.dirname(file);
  for (const old of fs.readdirSync(dir)) if (old.startsWith(`.${base}.`) && /\.v8cache(\.\d+\.\d+\.tmp)?$/.test(old)) fs.rmSync(path.join(dir, old), { force: true });
  // Written only once built: the entry is the bundle's input.
  write(file, stub(`${base}.bundle.js`, `.${base}.${hash}.v8cache`));
  fs.rmSync(`${file}.map`, { force: true }); // tsc's, for the entry alone; the bundle has its own
}

async function main() {
  for (const rel of ENTRIES) await bundle(rel);
}

module.exports = { ENTRIES, EXTERNAL };

if (require.main === module) {
  main().catch((e) => {
    process.stderr.write(`bundle: ${e && e.message ? e.message : e}\n`);
    process.exit(1);
  });
}
