/**
 * The one loading path for Flotilla's protobuf definitions.
 *
 * The `.proto` files under `<repo>/proto` are parsed with protobufjs into a single Root, a package at a
 * time: a lookup parses the files that declare the name's package (and what they import) on first use,
 * so a process pays at start-up only for the packages it serves and calls (parsing the whole set took
 * ~130 ms of CPU and ~1.7 MiB of heap in every process). `protoRoot()` completes the Root with every file.
 * Imports are resolved against `<repo>/proto` first; `google/protobuf/*` comes from the
 * definitions protobufjs ships.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import * as protobuf from "protobufjs";

export type Root = protobuf.Root;
export type Type = protobuf.Type;
export type Service = protobuf.Service;
export type Method = protobuf.Method;

/** Repository root: the nearest ancestor of this file holding package.json. */
export function repoRoot(): string {
  let dir = __dirname;
  for (;;) {
    if (fs.existsSync(path.join(dir, "package.json")) && fs.existsSync(path.join(dir, "proto"))) return dir;
    const up = path.dirname(dir);
    if (up === dir) throw new Error("cannot find the repository root from " + __dirname);
    dir = up;
  }
}

export const PROTO_DIR = path.join(repoRoot(), "proto");

function listProtos(dir: string, rel = ""): string[] {
  const out: string[] = [];
  for (const ent of fs.readdirSync(path.join(dir, rel), { withFileTypes: true })) {
    const r = rel ? `${rel}/${ent.name}` : ent.name;
    if (ent.isDirectory()) out.push(...listProtos(dir, r));
    else if (ent.name.endsWith(".proto")) out.push(r);
  }
  return out.sort();
}

/** An empty Root whose imports resolve against `dir`. */
function emptyRoot(dir: string): protobuf.Root {
  const root = new protobuf.Root();
  root.resolvePath = (_origin: string, target: string) => {
    const local = path.join(dir, target);
    if (fs.existsSync(local)) return local;
    return target; // protobufjs resolves google/protobuf/* from its bundled common files
  };
  return root;
}

/** Parse `files` (paths relative to `dir`) into `root`; a file already in it is not parsed again. */
function parseInto(root: protobuf.Root, files: string[]): void {
  root.loadSync(files, { keepCase: true });
  root.resolveAll();
}

/** Parse a set of proto files (paths relative to `dir`) into a fresh Root. */
export function loadRoot(dir: string = PROTO_DIR, files?: string[]): protobuf.Root {
  const root = emptyRoot(dir);
  parseInto(root, files ?? listProtos(dir));
  return root;
}

let cached: protobuf.Root | undefined;
let complete = false;
/** The files declaring each package, from their `package` lines (read, not parsed). */
let packages: Map<string, string[]> | undefined;
const loadedPackages = new Set<string>();

function packageFiles(): Map<string, string[]> {
  if (packages) return packages;
  packages = new Map();
  for (const f of listProtos(PROTO_DIR)) {
    const pkg = /^\s*package\s+([\w.]+)\s*;/m.exec(fs.readFileSync(path.join(PROTO_DIR, f), "utf8"))?.[1];
    if (pkg) packages.set(pkg, [...(packages.get(pkg) ?? []), f]);
  }
  return packages;
}

/** The Root with all of Flotilla's protos, loaded on first use. */
export function protoRoot(): protobuf.Root {
  cached ??= emptyRoot(PROTO_DIR);
  if (!complete) {
    parseInto(cached, listProtos(PROTO_DIR));
    complete = true;
  }
  return cached;
}

/**
 * The Root, holding `fullName` if any proto declares it: already parsed, or parsed now with the rest of
 * its package (the longest declared package the name starts with); a name in no package of ours (the
 * google.protobuf types come in as imports) completes the Root.
 */
function rootFor(fullName: string): protobuf.Root {
  if (complete) return cached!;
  cached ??= emptyRoot(PROTO_DIR);
  if (cached.lookup(fullName)) return cached;
  const pkgs = packageFiles();
  for (let i = fullName.lastIndexOf("."); i > 0; i = fullName.lastIndexOf(".", i - 1)) {
    const pkg = fullName.slice(0, i);
    const files = pkgs.get(pkg);
    if (!files) continue;
    if (loadedPackages.has(pkg)) break;
    loadedPackages.add(pkg);
    parseInto(cached, files);
    return cached;
  }
  return protoRoot();
}

export function lookupType(fullName: string): protobuf.Type {
  return rootFor(fullName).lookupType(fullName);
}

export function lookupService(fullName: string): protobuf.Service {
  return rootFor(fullName).lookupService(fullName);
}

/** Encode a plain object as `fullName`, validating field types first. */
export function encode(fullName: string, value: Record<string, unknown>): Buffer {
  const t = lookupType(fullName);
  const msg = t.fromObject(value);
  return Buffer.from(t.encode(msg).finish());
}

/** Decode bytes as `fullName` to a plain object (longs as numbers or strings, bytes as Buffer). */
export function decode<T = Record<string, unknown>>(fullName: string, bytes: Uint8Array): T {
  const t = lookupType(fullName);
  return t.toObject(t.decode(bytes), DECODE_OPTIONS) as T;
}

export const DECODE_OPTIONS: protobuf.IConversionOptions = {
  longs: Number,
  enums: Number,
  bytes: Buffer,
  defaults: true,
  arrays: true,
  objects: true,
  oneofs: true,
};

// Timestamps keep their nanoseconds: the one converter lives in libs/time.
export { toTimestamp, fromTimestamp, type Timestamp } from "../time";

/** A `google.protobuf.Any` as a plain object; containerd uses the bare full name as type URL. */
export interface AnyMsg {
  type_url: string;
  value: Buffer;
}

export function packAny(fullName: string, value: Record<string, unknown>): AnyMsg {
  return { type_url: fullName, value: encode(fullName, value) };
}

/** Decode an Any whose type URL names one of our messages (a `type.googleapis.com/` prefix is tolerated). */
export function unpackAny<T = Record<string, unknown>>(any: AnyMsg): T {
  const name = any.type_url.replace(/^.*\//, "");
  return decode<T>(name, any.value);
}

/** The message type an Any names, when we know it. */
export function anyType(any: { type_url: string }): protobuf.Type | undefined {
  try {
    return lookupType(any.type_url.replace(/^.*\//, ""));
  } catch {
    return undefined;
  }
}

/**
 * Check that `buf` is well-formed protobuf for `t`: every tag, varint and length-delimited field lies
 * within its bounds, recursively for nested messages. protobufjs's reader clamps an overlong length
 * to the end of the buffer instead of failing, so decoding alone would accept truncated input.
 * Throws an Error describing the first problem.
 */
export function validateWire(t: protobuf.Type, buf: Uint8Array, start = 0, end = buf.length, depth = 0): void {
  if (depth > 100) throw new Error("message nested too deeply");
  let pos = start;
  const varint = (): number => {
    let result = 0;
    let shift = 0;
    for (;;) {
      if (pos >= end) throw new Error(`truncated varint at offset ${pos}`);
      const b = buf[pos++]!;
      if (shift < 49) result += (b & 0x7f) * 2 ** shift;
      if ((b & 0x80) === 0) return result;
      shift += 7;
      if (shift > 63) throw new Error(`varint too long at offset ${pos}`);
    }
  };
  while (pos < end) {
    const tag = varint();
    const id = Math.floor(tag / 8);
    const wt = tag & 7;
    if (id === 0) throw new Error(`invalid field number 0 at offset ${pos}`);
    switch (wt) {
      case 0: varint(); break;
      case 1: pos += 8; break;
      case 5: pos += 4; break;
      case 2: {
        const len = varint();
        if (pos + len > end) throw new Error(`field ${id}: length ${len} exceeds the message`);
        const f = t.fieldsById[id];
        if (f) {
          f.resolve();
          if (f.map) {
            // map entries: key = 1, value = 2; validate nested message values
            const vt = f.resolvedType;
            if (vt instanceof protobuf.Type) validateMapEntry(vt, buf, pos, pos + len, depth + 1);
          } else if (f.resolvedType instanceof protobuf.Type) {
            validateWire(f.resolvedType, buf, pos, pos + len, depth + 1);
          }
        }
        pos += len;
        break;
      }
      case 3:
      case 4:
        throw new Error(`field ${id}: groups are not supported`);
      default:
        throw new Error(`field ${id}: invalid wire type ${wt}`);
    }
    if (pos > end) throw new Error(`field ${id} runs past the end of the message`);
  }
}

function validateMapEntry(valueType: protobuf.Type, buf: Uint8Array, start: number, end: number, depth: number): void {
  const entry = new protobuf.Type("MapEntry").add(new protobuf.Field("key", 1, "string")).add(new protobuf.Field("value", 2, "bytes"));
  const e = entry.decode(buf.subarray(start, end)) as unknown as { value?: Uint8Array };
  if (e.value && e.value.length) validateWire(valueType, e.value, 0, e.value.length, depth);
}
