/**
 * A small table-driven protobuf codec for the shim. The shim must start fast and stay small, so it
 * does not parse .proto files; the message tables in ./messages.ts mirror the protos under proto/
 * (test/tasks/shim-codec.test.ts checks them byte for byte against protobufjs on those protos).
 * Objects use the proto field names (snake_case); proto3 defaults are omitted on encode and filled on
 * decode; 64-bit integers are JS numbers.
 */
import { Reader, Writer } from "protobufjs/minimal";

export type Scalar = "string" | "bytes" | "bool" | "uint32" | "int32" | "uint64" | "int64" | "double" | "enum";

export interface Schema {
  name: string;
  fields: Field[];
}

/** [number, name, type, kind]: kind "repeated" or "map" (map<string,string>). */
export type Field = [number, string, Scalar | Schema, ("repeated" | "map")?];

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Obj = Record<string, any>;

const WIRE: Record<Scalar, number> = { string: 2, bytes: 2, bool: 0, uint32: 0, int32: 0, uint64: 0, int64: 0, double: 1, enum: 0 };

function isDefault(t: Scalar, v: unknown): boolean {
  switch (t) {
    case "string": return v === "" || v === undefined || v === null;
    case "bytes": return !v || (v as Uint8Array).length === 0;
    case "bool": return !v;
    default: return !v;
  }
}

function writeScalar(w: Writer, t: Scalar, v: unknown): void {
  switch (t) {
    case "string": w.string(String(v)); break;
    case "bytes": w.bytes(v as Uint8Array); break;
    case "bool": w.bool(Boolean(v)); break;
    case "uint32": w.uint32(Number(v) >>> 0); break;
    case "int32": case "enum": w.int32(Number(v)); break;
    case "uint64": w.uint64(Number(v)); break;
    case "int64": w.int64(Number(v)); break;
    case "double": w.double(Number(v)); break;
  }
}

function toNumber(v: unknown): number {
  if (typeof v === "number") return v;
  const l = v as { toNumber?: () => number; low: number; high: number; unsigned?: boolean };
  if (l.toNumber) return l.toNumber();
  return l.high * 4294967296 + (l.low >>> 0);
}

function readScalar(r: Reader, t: Scalar): unknown {
  switch (t) {
    case "string": return r.string();
    case "bytes": return Buffer.from(r.bytes());
    case "bool": return r.bool();
    case "uint32": return r.uint32();
    case "int32": case "enum": return r.int32();
    case "uint64": return toNumber(r.uint64());
    case "int64": return toNumber(r.int64());
    case "double": return r.double();
  }
}

function encodeInto(w: Writer, s: Schema, o: Obj): void {
  for (const [no, name, type, kind] of s.fields) {
    const v = o[name];
    if (v === undefined || v === null) continue;
    if (kind === "map") {
      for (const [k, val] of Object.entries(v as Record<string, string>)) {
        w.uint32((no << 3) | 2).fork();
        w.uint32((1 << 3) | 2).string(k);
        w.uint32((2 << 3) | 2).string(String(val));
        w.ldelim();
      }
      continue;
    }
    if (typeof type !== "string") {
      const list = kind === "repeated" ? (v as Obj[]) : [v as Obj];
      for (const item of list) {
        w.uint32((no << 3) | 2).fork();
        encodeInto(w, type, item ?? {});
        w.ldelim();
      }
      continue;
    }
    if (kind === "repeated") {
      const list = v as unknown[];
      if (!list.length) continue;
      if (type === "string" || type === "bytes") {
        for (const item of list) {
          w.uint32((no << 3) | 2);
          writeScalar(w, type, item);
        }
      } else {
        w.uint32((no << 3) | 2).fork();
        for (const item of list) writeScalar(w, type, item);
        w.ldelim();
      }
      continue;
    }
    if (isDefault(type, v)) continue;
    w.uint32((no << 3) | WIRE[type]);
    writeScalar(w, type, v);
  }
}

export function encode(s: Schema, o: Obj): Buffer {
  const w = Writer.create();
  encodeInto(w, s, o);
  return Buffer.from(w.finish());
}

function defaults(s: Schema): Obj {
  const o: Obj = {};
  for (const [, name, type, kind] of s.fields) {
    if (kind === "repeated") o[name] = [];
    else if (kind === "map") o[name] = {};
    else if (typeof type !== "string") o[name] = null;
    else if (type === "string") o[name] = "";
    else if (type === "bytes") o[name] = Buffer.alloc(0);
    else if (type === "bool") o[name] = false;
    else o[name] = 0;
  }
  return o;
}

function decodeFrom(r: Reader, s: Schema, end: number): Obj {
  const o = defaults(s);
  const byNo = new Map(s.fields.map((f) => [f[0], f]));
  while (r.pos < end) {
    const tag = r.uint32();
    const f = byNo.get(tag >>> 3);
    if (!f) {
      r.skipType(tag & 7);
      continue;
    }
    const [, name, type, kind] = f;
    if (kind === "map") {
      const e = r.uint32() + r.pos;
      let k = "";
      let v = "";
      while (r.pos < e) {
        const t = r.uint32();
        if (t >>> 3 === 1) k = r.string();
        else if (t >>> 3 === 2) v = r.string();
        else r.skipType(t & 7);
      }
      o[name][k] = v;
      continue;
    }
    if (typeof type !== "string") {
      const e = r.uint32() + r.pos;
      const m = decodeFrom(r, type, e);
      if (kind === "repeated") o[name].push(m);
      else o[name] = m;
      continue;
    }
    if (kind === "repeated") {
      if ((tag & 7) === 2 && type !== "string" && type !== "bytes") {
        const e = r.uint32() + r.pos;
        while (r.pos < e) o[name].push(readScalar(r, type));
      } else {
        o[name].push(readScalar(r, type));
      }
      continue;
    }
    o[name] = readScalar(r, type);
  }
  return o;
}

export function decode(s: Schema, buf: Uint8Array): Obj {
  const r = Reader.create(buf);
  return decodeFrom(r, s, r.len);
}

export const msg = (name: string, fields: Field[]): Schema => ({ name, fields });
