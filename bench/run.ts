/**
 * `npm run bench [names...]`: runs each benchmark module under bench/ (a file exporting `run(): Promise<Row[]>`),
 * Flotilla and containerd side by side in the same run, and prints the ratios.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { report, type Row } from "./lib";

async function main(): Promise<void> {
  const only = process.argv.slice(2);
  const mods = fs.readdirSync(__dirname).filter((f) => f.endsWith(".js") && !["lib.js", "run.js"].includes(f)).map((f) => f.slice(0, -3));
  const rows: Row[] = [];
  for (const m of mods.filter((x) => only.length === 0 || only.includes(x)).sort()) {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const mod = require(path.join(__dirname, m)) as { run?: () => Promise<Row[]> };
    if (typeof mod.run !== "function") continue;
    console.error(`bench: ${m}`);
    rows.push(...(await mod.run()));
  }
  report(rows);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
