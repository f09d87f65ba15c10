/**
 * Runtime v2 bundles (containerd's runtime/v2/bundle.go): `<state>/<ns>/<id>` holding `config.json`
 * (the spec bytes as the client sent them), `rootfs/`, the `log` FIFO, a `work` link to
 * `<root>/<ns>/<id>`, and what the shim and the manager write (address, bootstrap.json,
 * shim-binary-path, init.pid...). Deleting unmounts the rootfs, then renames each directory to a
 * unique hidden name and removes it in the background, so a crash never leaves a half-deleted bundle
 * that looks live (hidden leftovers are removed at start-up).
 */
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { validateIdentifier } from "#libs/context";
import { errAlreadyExists } from "#libs/errdefs";
import { mkfifo } from "#libs/sys/linux";
import { unmountAll } from "#libs/mount";

export interface BundleDirs {
  /** `<state>/tasks/io.containerd.runtime.v2.task` */
  state: string;
  /** `<root>/tasks/io.containerd.runtime.v2.task` */
  root: string;
}

/** The host gid that a spec's user namespace maps its gid 0 to (0 without a mapping). */
function remappedRootGid(spec: Uint8Array): number {
  let maps: { containerID?: number; hostID?: number }[] | undefined;
  try {
    maps = (JSON.parse(Buffer.from(spec).toString()) as { linux?: { gidMappings?: { containerID?: number; hostID?: number }[] } }).linux?.gidMappings;
  } catch {
    return 0;
  }
  return maps?.find((m) => (m.containerID ?? 0) === 0)?.hostID ?? 0;
}

export class Bundle {
  readonly path: string;
  readonly workdir: string;

  constructor(dirs: BundleDirs, readonly namespace: string, readonly id: string) {
    this.path = path.join(dirs.state, namespace, id);
    this.workdir = path.join(dirs.root, namespace, id);
  }

  static create(dirs: BundleDirs, namespace: string, id: string, spec: Uint8Array): Bundle {
    validateIdentifier(id);
    const b = new Bundle(dirs, namespace, id);
    fs.mkdirSync(path.join(dirs.state, namespace), { recursive: true, mode: 0o711 });
    fs.mkdirSync(path.join(dirs.root, namespace), { recursive: true, mode: 0o711 });
    try {
      fs.mkdirSync(b.path, { mode: 0o700 });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "EEXIST") throw errAlreadyExists(`bundle ${b.path}`);
      throw e;
    }
    try {
      // A user-namespaced container's root (its gid 0, mapped) must reach the rootfs below the bundle.
      const gid = remappedRootGid(spec);
      if (gid) {
        fs.chownSync(b.path, -1, gid);
        fs.chmodSync(b.path, 0o710);
      }
      fs.mkdirSync(path.join(b.path, "rootfs"), { mode: 0o711 });
      fs.rmSync(b.workdir, { recursive: true, force: true });
      fs.mkdirSync(b.workdir, { mode: 0o711 });
      fs.symlinkSync(b.workdir, path.join(b.path, "work"));
      fs.writeFileSync(path.join(b.path, "config.json"), spec, { mode: 0o600 });
      mkfifo(path.join(b.path, "log"), 0o700);
    } catch (e) {
      b.delete();
      throw e;
    }
    return b;
  }

  file(name: string): string {
    return path.join(this.path, name);
  }

  read(name: string): string | undefined {
    try {
      return fs.readFileSync(this.file(name), "utf8");
    } catch {
      return undefined;
    }
  }

  write(name: string, data: string): void {
    fs.writeFileSync(this.file(name), data, { mode: 0o600 });
  }

  exists(): boolean {
    return fs.existsSync(this.path);
  }

  /** Unmount the rootfs, then remove the bundle and its work directory (hidden rename first). */
  delete(): void {
    const rootfs = path.join(this.path, "rootfs");
    try {
      unmountAll(rootfs);
    } catch {
      /* best effort: the bundle is removed all the same */
    }
    for (const dir of [this.path, this.workdir]) {
      const hidden = path.join(path.dirname(dir), `.${path.basename(dir)}.${crypto.randomBytes(4).toString("hex")}`);
      try {
        fs.renameSync(dir, hidden);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== "ENOENT") fs.rmSync(dir, { recursive: true, force: true });
        continue;
      }
      // Gone from view at once; the files go in the background (start-up removes hidden leftovers).
      fs.rm(hidden, { recursive: true, force: true }, () => undefined);
    }
  }
}

/** Every bundle under the state directory: [namespace, id] (hidden entries skipped). */
export function listBundles(dirs: BundleDirs): { namespace: string; id: string }[] {
  const out: { namespace: string; id: string }[] = [];
  let nss: string[] = [];
  try {
    nss = fs.readdirSync(dirs.state);
  } catch {
    return out;
  }
  for (const ns of nss) {
    if (ns.startsWith(".")) continue;
    let ids: string[] = [];
    try {
      ids = fs.readdirSync(path.join(dirs.state, ns));
    } catch {
      continue;
    }
    for (const id of ids) {
      if (id.startsWith(".")) {
        fs.rmSync(path.join(dirs.state, ns, id), { recursive: true, force: true });
        continue;
      }
      out.push({ namespace: ns, id });
    }
  }
  return out;
}
