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
const fs = require("node:fs");
const path = require("node:path");
const esbuild = require("esbuild");

const ROOT = path.join(__dirname, "..");
const DIST = path.join(ROOT, "dist");

/** Every process's entry (paths under dist/), and the snapshots process's worker thread. */
const ENTRIES = [
  "cli/main.js",
  ...["content", "snapshots", "images", "tasks", "transfer", "sandbox", "gateway", "shim"].map((s) => `services/${s}/main.js`),
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

async function bundle(rel) {
  const file = path.join(DIST, rel);
  const res = await esbuild.build({
    entryPoints: [file],
    outfile: file,
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
  // Written only once built: an entry is its own input.
  for (const out of res.outputFiles) {
    const tmp = `${out.path}.tmp${process.pid}`;
    fs.writeFileSync(tmp, out.contents);
    fs.renameSync(tmp, out.path);
  }
}

async function main() {
  for (const rel of ENTRIES) await bundle(rel);
}

main().catch((e) => {
  process.stderr.write(`bundle: ${e && e.message ? e.message : e}\n`);
  process.exit(1);
});
