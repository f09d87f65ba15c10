// ESLint (flat config): the boundaries between processes, no import cycles, no `any` in the gRPC
// handlers, no `export *` in libs index files, no deep `../../../` imports (use the #libs/... aliases).
// Kept to those rules on purpose: formatting and style are not linted. `npm run lint` runs it.
import * as fs from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import tseslint from "typescript-eslint";
import importX from "eslint-plugin-import-x";
import { createTypeScriptImportResolver } from "eslint-import-resolver-typescript";

const root = path.dirname(fileURLToPath(import.meta.url));
const services = fs.readdirSync(path.join(root, "services"), { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name).sort();

// A service may import libs, its own files, and of another service only that service's published
// read module, services/<other>/public. One zone per (importer, other service) pair.
const PUBLIC_ONLY = "Import another service only through its published module services/<name>/public (or go through libs/clients).";
const serviceZones = services.flatMap((s) =>
  services.filter((o) => o !== s).map((o) => ({ target: `./services/${s}`, from: `./services/${o}`, except: ["./public"], message: PUBLIC_ONLY })),
);
const libsZones = [
  { target: "./libs", from: "./services", message: "libs must not depend on a service: move the shared piece into libs." },
  { target: "./libs", from: "./cli", message: "libs must not depend on the cli." },
];
// The cli talks to the services over gRPC (libs/clients) and starts them by path. Besides the public read
// modules it reads each service's declared components (services/<name>/components.ts: plugin ids and config
// schemas), so `flotilla up` and `flotilla config check` validate every process's tables before starting any.
const CLI_ONLY = "The cli imports of a service only services/<name>/public and services/<name>/components (or goes through libs/clients).";
const cliZones = services.map((o) => ({ target: "./cli", from: `./services/${o}`, except: ["./public", "./components.ts"], message: CLI_ONLY }));

const DEEP = "Use a path alias (#libs/..., #services/..., #cli/..., #test/...) instead of climbing three or more folders.";

export default tseslint.config(
  { ignores: ["dist/**", "node_modules/**", "**/*.js", "**/*.mjs", "**/*.cjs"] },
  {
    files: ["**/*.ts"],
    languageOptions: { parser: tseslint.parser, ecmaVersion: 2022, sourceType: "module" },
    plugins: { "@typescript-eslint": tseslint.plugin, "import-x": importX },
    // Rules this config leaves off are still named by existing disable comments; do not report them.
    linterOptions: { reportUnusedDisableDirectives: "off" },
    settings: {
      "import-x/extensions": [".ts"],
      "import-x/resolver-next": [createTypeScriptImportResolver({ project: path.join(root, "tsconfig.json") })],
    },
    rules: {
      "no-restricted-imports": ["error", { patterns: [{ regex: "^(\\.\\./){3,}", message: DEEP }] }],
    },
  },
  {
    files: ["libs/**/*.ts", "services/**/*.ts", "cli/**/*.ts"],
    rules: {
      "import-x/no-restricted-paths": ["error", { basePath: root, zones: [...serviceZones, ...libsZones, ...cliZones] }],
      // Type-only imports cannot make a run-time cycle; the rest must not loop.
      "import-x/no-cycle": ["error", { ignoreExternal: true, allowUnsafeDynamicCyclicDependency: false }],
    },
  },
  {
    files: ["services/*/src/server/**/*.ts", "libs/grpc/**/*.ts"],
    rules: { "@typescript-eslint/no-explicit-any": "error" },
  },
  {
    files: ["libs/**/index.ts"],
    rules: {
      "no-restricted-syntax": ["error", { selector: "ExportAllDeclaration", message: "Name what a libs index re-exports: no `export *`." }],
    },
  },
);
