/**
 * Checkpoints as containerd's tasks service writes them (services/tasks/local.go Checkpoint): the
 * shim dumps the task with CRIU into a directory; unless the caller named its own image path, that
 * directory goes to the content store as a tar (`application/vnd.containerd.container.criu.checkpoint.criu.tar`)
 * next to the container's spec (an Any, `...checkpoint.config.v1+proto`), and the two descriptors
 * are returned.
 */
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import type { CallContext } from "#libs/context";
import { isAlreadyExists } from "#libs/errdefs";
import { encode } from "#libs/proto";
import type { ContentStore } from "#libs/core/content";
import type { Descriptor } from "#libs/core/tasks";

export const MEDIA_TYPE_CHECKPOINT = "application/vnd.containerd.container.criu.checkpoint.criu.tar";
export const MEDIA_TYPE_CHECKPOINT_CONFIG = "application/vnd.containerd.container.checkpoint.config.v1+proto";

function octal(n: number, width: number): string {
  return n.toString(8).padStart(width - 1, "0") + "\0";
}

function header(name: string, type: "0" | "2" | "5", size: number, mode: number, mtime: number, link = ""): Buffer {
  const h = Buffer.alloc(512);
  let prefix = "";
  let base = name;
  if (Buffer.byteLength(name) > 100) {
    const cut = name.lastIndexOf("/", 155);
    if (cut <= 0 || Buffer.byteLength(name.slice(cut + 1)) > 100) throw new Error(`checkpoint tar: path too long: ${name}`);
    prefix = name.slice(0, cut);
    base = name.slice(cut + 1);
  }
  h.write(base, 0, 100, "utf8");
  h.write(octal(mode & 0o7777, 8), 100, "ascii");
  h.write(octal(0, 8), 108, "ascii");
  h.write(octal(0, 8), 116, "ascii");
  h.write(octal(size, 12), 124, "ascii");
  h.write(octal(Math.floor(mtime), 12), 136, "ascii");
  h.fill(0x20, 148, 156);
  h.write(type, 156, "ascii");
  if (link) h.write(link, 157, 100, "utf8");
  h.write("ustar\u000000", 257, "ascii");
  if (prefix) h.write(prefix, 345, 155, "utf8");
  let sum = 0;
  for (const b of h) sum += b;
  h.write(octal(sum, 7) + " ", 148, "ascii");
  return h;
}

/** A ustar archive of a directory tree (regular files, directories, symlinks), paths relative to it. */
export function tarDirectory(dir: string): Buffer {
  const parts: Buffer[] = [];
  const walk = (rel: string): void => {
    for (const name of fs.readdirSync(path.join(dir, rel)).sort()) {
      const r = rel ? `${rel}/${name}` : name;
      const st = fs.lstatSync(path.join(dir, r));
      if (st.isDirectory()) {
        parts.push(header(`${r}/`, "5", 0, st.mode, st.mtimeMs / 1000));
        walk(r);
      } else if (st.isSymbolicLink()) {
        parts.push(header(r, "2", 0, st.mode, st.mtimeMs / 1000, fs.readlinkSync(path.join(dir, r))));
      } else if (st.isFile()) {
        const data = fs.readFileSync(path.join(dir, r));
        parts.push(header(r, "0", data.length, st.mode, st.mtimeMs / 1000), data);
        const pad = (512 - (data.length % 512)) % 512;
        if (pad) parts.push(Buffer.alloc(pad));
      }
    }
  };
  walk("");
  parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}

/** Write `data` to the content store under `ref`; an already stored blob is fine. */
export async function writeBlob(ctx: CallContext, content: ContentStore, ref: string, mediaType: string, data: Buffer): Promise<Descriptor> {
  const digest = `sha256:${crypto.createHash("sha256").update(data).digest("hex")}`;
  try {
    const w = await content.writer(ctx, { ref, total: data.length, expected: digest });
    try {
      for (let off = 0; off < data.length; off += 1 << 20) await w.write(data.subarray(off, off + (1 << 20)));
      await w.commit(data.length, digest);
    } catch (e) {
      await w.close();
      if (!isAlreadyExists(e)) throw e;
    }
  } catch (e) {
    if (!isAlreadyExists(e)) throw e;
  }
  return { mediaType, digest, size: data.length, annotations: {} };
}

/** The spec as containerd stores it in a checkpoint: the protobuf encoding of its Any. */
export function specBlob(spec: { typeUrl: string; value: Uint8Array }): Buffer {
  return encode("google.protobuf.Any", { type_url: spec.typeUrl, value: Buffer.from(spec.value) });
}
