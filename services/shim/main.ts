/**
 * Flotilla's runtime v2 shim for runc (or crun): `start` and `delete` subcommands, and the serving
 * daemon. Each path loads only what it needs, so `start` stays quick and the daemon small.
 */
import { parseFlags } from "./src/flags";

async function main(): Promise<void> {
  const flags = parseFlags(process.argv.slice(2));
  if (flags.version) {
    process.stdout.write("containerd-shim-flotilla-v2 (Flotilla's runc shim)\n");
    return;
  }
  if (!flags.namespace && !(flags.warm && flags.action === "serve")) throw new Error("shim namespace cannot be empty");
  switch (flags.action) {
    case "start": {
      const { start } = await import("./src/start");
      return start(flags, __filename);
    }
    case "delete": {
      const { del } = await import("./src/delete");
      return del(flags);
    }
    default: {
      const { serve } = await import("./src/daemon");
      return serve(flags);
    }
  }
}

main().catch((e: Error) => {
  process.stderr.write(`${e.message}\n`);
  process.exit(1);
});
