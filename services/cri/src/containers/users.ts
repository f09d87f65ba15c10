/**
 * Users and groups of a container, looked up in its rootfs's /etc/passwd and /etc/group as containerd's
 * oci.WithUser / WithAdditionalGIDs do: a numeric uid takes its primary group from passwd (0 when not
 * listed), a name must be listed, `user:group` parts may each be a name or a number.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { errInvalidArgument, errNotFound } from "#libs/errdefs";
import { parseOptions, type Mount } from "#libs/mount";

/** Reads a file of the container's rootfs by its path relative to `/` (undefined when absent). */
export interface RootfsFiles {
  read(rel: string): string | undefined;
}

interface PasswdEntry { name: string; uid: number; gid: number }
interface GroupEntry { name: string; gid: number; members: string[] }

const MAX_ID = 2 ** 31 - 1;

function passwd(rootfs: RootfsFiles): PasswdEntry[] | undefined {
  const text = rootfs.read("etc/passwd");
  if (text === undefined) return undefined;
  const out: PasswdEntry[] = [];
  for (const line of text.split("\n")) {
    const f = line.trim().split(":");
    if (f.length < 4 || line.trim().startsWith("#")) continue;
    const uid = Number(f[2]), gid = Number(f[3]);
    if (!Number.isInteger(uid) || !Number.isInteger(gid)) continue;
    out.push({ name: f[0]!, uid, gid });
  }
  return out;
}

function groups(rootfs: RootfsFiles): GroupEntry[] | undefined {
  const text = rootfs.read("etc/group");
  if (text === undefined) return undefined;
  const out: GroupEntry[] = [];
  for (const line of text.split("\n")) {
    const f = line.trim().split(":");
    if (f.length < 3 || line.trim().startsWith("#")) continue;
    const gid = Number(f[2]);
    if (!Number.isInteger(gid)) continue;
    out.push({ name: f[0]!, gid, members: (f[3] ?? "").split(",").map((m) => m.trim()).filter(Boolean) });
  }
  return out;
}

const asId = (s: string): number | undefined => (/^\d+$/.test(s) && Number(s) <= MAX_ID ? Number(s) : undefined);

/** `uid`, `name`, `uid:gid`, `name:group`... to the process user (its primary gid first in additionalGids). */
export function resolveUser(userstr: string, rootfs: RootfsFiles): { uid: number; gid: number; additionalGids: number[] } {
  const parts = userstr.split(":");
  const done = (uid: number, gid: number): { uid: number; gid: number; additionalGids: number[] } => ({ uid, gid, additionalGids: [gid] });
  if (parts.length === 1) {
    const id = asId(parts[0]!);
    if (id !== undefined) {
      const u = passwd(rootfs)?.find((e) => e.uid === id);
      return done(id, u ? u.gid : 0);
    }
    const u = passwd(rootfs)?.find((e) => e.name === parts[0]);
    if (!u) throw errNotFound(`no users found matching ${JSON.stringify(parts[0])}`);
    return done(u.uid, u.gid);
  }
  if (parts.length !== 2) throw errInvalidArgument(`invalid USER value ${userstr}`);
  let uid = asId(parts[0]!);
  let gid = asId(parts[1]!);
  if (uid === undefined) {
    const u = passwd(rootfs)?.find((e) => e.name === parts[0]);
    if (!u) throw errNotFound(`no users found matching ${JSON.stringify(parts[0])}`);
    uid = u.uid;
  }
  if (gid === undefined) {
    const g = groups(rootfs)?.find((e) => e.name === parts[1]);
    if (!g) throw errNotFound(`no groups found matching ${JSON.stringify(parts[1])}`);
    gid = g.gid;
  }
  return done(uid, gid);
}

/** The gids of the groups listing `userstr` (a name, or a uid named through passwd) as a member. */
export function additionalGids(userstr: string, primaryGid: number, rootfs: RootfsFiles): number[] {
  let name = userstr;
  const id = asId(userstr);
  if (id !== undefined) {
    const u = passwd(rootfs)?.find((e) => e.uid === id);
    if (!u) return [primaryGid];
    name = u.name;
  }
  const gs = groups(rootfs);
  if (!gs) return [primaryGid];
  const out = gs.filter((g) => g.name !== name && g.members.includes(name)).map((g) => g.gid);
  return out.includes(primaryGid) ? out : [primaryGid, ...out];
}

/**
 * The files of a snapshot's rootfs without mounting it: an overlay's upper directory then its lower
 * ones, top first (a whiteout hides what is below), or a bind mount's source.
 */
export function rootfsFromMounts(mounts: readonly Mount[]): RootfsFiles {
  const dirs: string[] = [];
  for (const m of mounts) {
    if (m.type === "bind" || m.type === "rbind") dirs.push(m.source);
    else if (m.type === "overlay") {
      const o = parseOptions(m.options ?? []);
      const find = (k: string): string | undefined => o.data.find((d) => d.startsWith(`${k}=`))?.slice(k.length + 1);
      const upper = find("upperdir");
      if (upper) dirs.push(upper);
      dirs.push(...(find("lowerdir") ?? "").split(":").filter(Boolean));
    }
  }
  return {
    read(rel) {
      for (const d of dirs) {
        const p = path.join(d, rel);
        const wh = path.join(path.dirname(p), `.wh.${path.basename(p)}`);
        if (fs.existsSync(wh)) return undefined;
        try {
          const st = fs.statSync(p);
          if (st.isCharacterDevice() && st.rdev === 0) return undefined; // overlay whiteout
          return fs.readFileSync(p, "utf8");
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
        }
      }
      return undefined;
    },
  };
}
