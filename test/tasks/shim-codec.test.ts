/**
 * The shim's table-driven protobuf codec (services/shim/src/pb.ts, messages.ts) against protobufjs
 * on the real protos: every table's fields match the proto's numbers, names and types, and sample
 * messages with every field set round-trip byte-compatibly in both directions.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { DECODE_OPTIONS, lookupType } from "#libs/proto";
import { decode, encode, type Obj, type Schema } from "#services/shim/src/pb";
import { ALL } from "#services/shim/src/messages";

const SCALAR_TYPES: Record<string, string[]> = {
  string: ["string"], bytes: ["bytes"], bool: ["bool"], uint32: ["uint32"], int32: ["int32"],
  uint64: ["uint64"], int64: ["int64"], double: ["double"], enum: [],
};

function sample(s: Schema, depth = 0): Obj {
  const o: Obj = {};
  for (const [no, name, type, kind] of s.fields) {
    const one = (i: number): unknown => {
      if (typeof type !== "string") return depth > 4 ? {} : sample(type, depth + 1);
      switch (type) {
        case "string": return `${name}-${i}`;
        case "bytes": return Buffer.from([no, i, 255]);
        case "bool": return true;
        case "uint32": return 7 + i + no;
        case "int32": return -3 - i;
        case "enum": return 2;
        case "uint64": return 1234567890123 + i + no;
        case "int64": return 1234567890 + i;
        case "double": return 1.5 + i;
      }
    };
    if (kind === "map") o[name] = { a: "1", b: "2" };
    else if (kind === "repeated") o[name] = [one(0), one(1)];
    else o[name] = one(0);
  }
  return o;
}

/** Only the fields a table declares (the shim leaves out rdma, network and PSI statistics). */
function pick(s: Schema, o: Obj | null): Obj | null {
  if (!o) return o;
  const out: Obj = {};
  for (const [, name, type, kind] of s.fields) {
    const v = o[name];
    if (typeof type === "string" || kind === "map") out[name] = v;
    else if (kind === "repeated") out[name] = (v as Obj[]).map((x) => pick(type, x));
    else out[name] = pick(type, v as Obj | null);
  }
  return out;
}

for (const s of ALL) {
  test(`shim codec - ${s.name}`, () => {
    const t = lookupType(s.name);
    for (const [no, name, type, kind] of s.fields) {
      const f = t.fieldsById[no];
      assert.ok(f, `${s.name} has field ${no}`);
      assert.equal(f.name, name, `${s.name} field ${no} name`);
      f.resolve();
      if (kind === "map") assert.ok(f.map, `${name} is a map`);
      else assert.equal(f.repeated, kind === "repeated", `${name} repeated`);
      if (typeof type === "string") {
        if (type === "enum") assert.ok(f.resolvedType && "values" in f.resolvedType, `${name} is an enum`);
        else assert.ok(SCALAR_TYPES[type]!.includes(f.type), `${s.name}.${name}: ${type} vs ${f.type}`);
      } else {
        assert.equal(f.resolvedType?.fullName.slice(1), type.name, `${s.name}.${name} message type`);
      }
    }
    const o = sample(s);
    const mine = encode(s, o);
    const theirsObj = pick(s, t.toObject(t.decode(mine), DECODE_OPTIONS));
    assert.deepEqual(decode(s, mine), theirsObj, "our decode of our bytes == protobufjs decode of our bytes");
    const theirs = Buffer.from(t.encode(t.fromObject(o)).finish());
    assert.deepEqual(decode(s, theirs), theirsObj, "our decode of protobufjs bytes");
    assert.deepEqual(decode(s, Buffer.alloc(0)), pick(s, t.toObject(t.decode(Buffer.alloc(0)), DECODE_OPTIONS)), "defaults");
  });
}
