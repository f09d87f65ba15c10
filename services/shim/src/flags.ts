/**
 * The shim's command line, as containerd passes it (Go flag syntax: `-name value`, `-name=value`,
 * `--name value`; booleans bare): `-namespace NS -address ADDR -publish-binary BIN -id ID
 * [-bundle PATH] [-debug] start|delete`; without an action the process serves.
 */
export interface ShimFlags {
  namespace: string;
  address: string;
  publishBinary: string;
  id: string;
  bundle: string;
  socket: string;
  debug: boolean;
  /** A pre-started shim that learns its namespace and bundle from its first Create. */
  warm: boolean;
  version: boolean;
  action: "start" | "delete" | "serve";
}

const BOOLEAN = new Set(["debug", "v", "version", "info", "warm"]);

export function parseFlags(argv: readonly string[]): ShimFlags {
  const f: ShimFlags = { namespace: "", address: "", publishBinary: "", id: "", bundle: "", socket: "", debug: false, warm: false, version: false, action: "serve" };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (!a.startsWith("-")) {
      if (a === "start" || a === "delete") f.action = a;
      continue;
    }
    let name = a.replace(/^--?/, "");
    let value: string | undefined;
    const eq = name.indexOf("=");
    if (eq >= 0) {
      value = name.slice(eq + 1);
      name = name.slice(0, eq);
    }
    if (BOOLEAN.has(name)) {
      const on = value === undefined || value === "true" || value === "1";
      if (name === "debug") f.debug = on;
      if (name === "warm") f.warm = on;
      if (name === "v" || name === "version") f.version = on;
      continue;
    }
    if (value === undefined) value = argv[++i] ?? "";
    switch (name) {
      case "namespace": f.namespace = value; break;
      case "address": f.address = value; break;
      case "publish-binary": f.publishBinary = value; break;
      case "id": f.id = value; break;
      case "bundle": f.bundle = value; break;
      case "socket": f.socket = value; break;
    }
  }
  return f;
}
