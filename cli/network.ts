/**
 * `flotilla network ls|create|rm|inspect`: the CNI networks sandboxes attach to, in the conf dir the
 * sandbox process uses (the config's `cni_conf_dir` when it holds networks, else Flotilla's own
 * `<root>/cni/net.d` with its default bridge network).
 */
import { parseArgs } from "node:util";
import { configPathFromArgv, loadConfig, pluginConfig } from "../libs/config";
import { createNetwork, inspectNetwork, listNetworks, networkConfDir, removeNetwork, SYSTEM_CNI_CONF_DIR, type NetworkConfList } from "../libs/cni";
import { table } from "./table";

const USAGE = `usage: flotilla network <command> [options]

commands:
  ls [-q]                                  list networks (the first is the one sandboxes get)
  create [--subnet CIDR] [--bridge NAME] NAME
                                           add a bridge network (host-local IPAM, portmap)
  inspect NAME...                          the network configs, as JSON
  rm NAME...                               remove networks

options: -c/--config FILE (the stack's config: its root and cni_conf_dir)
`;

const OPTIONS = {
  config: { type: "string", short: "c" },
  address: { type: "string", short: "a" },
  namespace: { type: "string", short: "n" },
  subnet: { type: "string" },
  bridge: { type: "string" },
  quiet: { type: "boolean", short: "q" },
  help: { type: "boolean", short: "h" },
} as const;

/** The podsandbox controller's config table (its `cni_conf_dir`). */
const PODSANDBOX = ["io.containerd.podsandbox.controller.v1", "podsandbox"] as const;

function subnetOf(n: NetworkConfList): string {
  const ipam = n.plugins[0]?.ipam as { subnet?: string; ranges?: { subnet?: string }[][] } | undefined;
  return ipam?.ranges?.[0]?.[0]?.subnet ?? ipam?.subnet ?? "-";
}

/** Entry point for `flotilla network ...`; resolves with the exit code. */
export async function networkCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (!sub || sub === "help" || sub === "--help" || sub === "-h") {
    process.stdout.write(USAGE);
    return sub ? 0 : 1;
  }
  try {
    const { values: v, positionals: pos } = parseArgs({ args: rest, options: OPTIONS, allowPositionals: true, strict: true });
    if (v.help) {
      process.stdout.write(USAGE);
      return 0;
    }
    const cfg = loadConfig(v.config ?? configPathFromArgv(rest));
    const configured = pluginConfig(cfg, ...PODSANDBOX).cni_conf_dir;
    const dir = networkConfDir(typeof configured === "string" ? configured : SYSTEM_CNI_CONF_DIR, cfg.root);
    switch (sub) {
      case "ls":
      case "list": {
        const nets = listNetworks(dir);
        if (v.quiet) for (const n of nets) process.stdout.write(n.name + "\n");
        else {
          const rows = [["NAME", "PLUGINS", "BRIDGE", "SUBNET", "FILE"]];
          for (const n of nets) rows.push([n.name, n.plugins.map((p) => p.type).join(","), String(n.plugins[0]?.bridge ?? "-"), subnetOf(n), n.source]);
          process.stdout.write(table(rows) + "\n");
        }
        return 0;
      }
      case "create": {
        if (pos.length !== 1) throw new Error("create takes exactly one network NAME");
        const n = createNetwork(dir, { name: pos[0]!, ...(v.subnet ? { subnet: v.subnet } : {}), ...(v.bridge ? { bridge: v.bridge } : {}) });
        process.stdout.write(`${n.name}\n`);
        return 0;
      }
      case "inspect": {
        if (pos.length === 0) throw new Error("inspect needs a network NAME");
        const all = pos.map((name) => {
          const { source, ...conf } = inspectNetwork(dir, name);
          return { ...conf, file: source };
        });
        process.stdout.write(JSON.stringify(all.length === 1 ? all[0] : all, null, 2) + "\n");
        return 0;
      }
      case "rm":
      case "remove": {
        if (pos.length === 0) throw new Error("rm needs a network NAME");
        let rc = 0;
        for (const name of pos) {
          try {
            removeNetwork(dir, name);
            process.stdout.write(name + "\n");
          } catch (e) {
            process.stderr.write(`flotilla network rm ${name}: ${(e as Error).message}\n`);
            rc = 1;
          }
        }
        return rc;
      }
      default:
        process.stderr.write(`flotilla network: unknown command ${JSON.stringify(sub)}\n${USAGE}`);
        return 1;
    }
  } catch (e) {
    process.stderr.write(`flotilla network ${sub}: ${(e as Error).message}\n`);
    return 1;
  }
}
