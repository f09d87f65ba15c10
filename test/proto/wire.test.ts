/**
 * Pins the wire format of Flotilla's .proto files.
 *
 * 1. Against containerd 1.6 as installed by Debian (golang-github-containerd-containerd-dev and the
 *    packages it depends on): every upstream message, enum and service must exist in ours with the
 *    same full name, fields, numbers, types and streaming kinds, and populated messages must encode to
 *    the same bytes both ways. Upstream files are parsed at test time; nothing is copied.
 * 2. Golden bytes, computed by hand from field numbers and wire types, for the containerd 2.x-only
 *    messages (transfer, streaming, sandbox, Envelope, bootstrap, task v3) and the ttrpc envelope.
 * 3. The type URLs that travel inside google.protobuf.Any resolve to our types.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import * as protobuf from "protobufjs";
import { PROTO_DIR, encode, lookupService, lookupType, protoRoot } from "#libs/proto";

// ---------------------------------------------------------------------------------------------
// Upstream sources (Debian gocode tree)
// ---------------------------------------------------------------------------------------------

const GOSRC = process.env.FLOTILLA_GOCODE_SRC || "/usr/share/gocode/src";
const CONTAINERD = path.join(GOSRC, "github.com/containerd/containerd");

/** Upstream inputs and the apt package that installs each one. */
const UPSTREAM_REQUIREMENTS: Array<{ path: string; pkg: string }> = [
  { path: path.join(CONTAINERD, "api"), pkg: "golang-github-containerd-containerd-dev" },
  { path: path.join(GOSRC, "github.com/gogo/protobuf/gogoproto/gogo.proto"), pkg: "golang-github-gogo-protobuf-dev" },
  { path: path.join(GOSRC, "github.com/gogo/googleapis/google/rpc/status.proto"), pkg: "golang-github-gogo-googleapis-dev" },
  { path: path.join(GOSRC, "github.com/containerd/cgroups/stats/v1/metrics.proto"), pkg: "golang-github-containerd-cgroups-dev" },
  { path: path.join(GOSRC, "github.com/containerd/cgroups/v2/stats/metrics.proto"), pkg: "golang-github-containerd-cgroups-dev" },
  {
    path: path.join(GOSRC, "google.golang.org/grpc/debian/missing-sources/grpc/grpc-proto/master/grpc/health/v1/health.proto"),
    pkg: "golang-google-grpc-dev",
  },
];

function missingUpstream(): string[] {
  return UPSTREAM_REQUIREMENTS.filter((r) => !fs.existsSync(r.path)).map((r) => `${r.path} (apt package ${r.pkg})`);
}

function listProtoFiles(dir: string): string[] {
  const out: string[] = [];
  for (const ent of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, ent.name);
    if (ent.isDirectory()) out.push(...listProtoFiles(p));
    else if (ent.name.endsWith(".proto")) out.push(p);
  }
  return out.sort();
}

let upstreamCache: protobuf.Root | undefined;

/** Parse containerd 1.6's protos (plus cgroups stats, google.rpc.Status, grpc health) into their own Root. */
function upstreamRoot(): protobuf.Root {
  if (upstreamCache) return upstreamCache;
  const missing = missingUpstream();
  if (missing.length) {
    throw new Error(
      "upstream containerd 1.6 protos are required for the wire-compatibility test but are missing:\n  " +
        missing.join("\n  ") +
        "\ninstall them with: apt-get install golang-github-containerd-containerd-dev",
    );
  }
  const searchDirs = [
    GOSRC, // github.com/containerd/containerd/..., github.com/gogo/protobuf/...
    path.join(GOSRC, "github.com/gogo/protobuf"), // gogoproto/gogo.proto
    path.join(GOSRC, "github.com/gogo/protobuf/protobuf"), // google/protobuf/descriptor.proto
    path.join(GOSRC, "github.com/gogo/googleapis"), // google/rpc/status.proto
  ];
  const root = new protobuf.Root();
  root.resolvePath = (_origin: string, target: string) => {
    if (path.isAbsolute(target)) return target;
    for (const dir of searchDirs) {
      const p = path.join(dir, target);
      if (fs.existsSync(p)) return p;
    }
    return target; // google/protobuf/{any,empty,...}: protobufjs' bundled copies
  };
  root.loadSync(listProtoFiles(path.join(CONTAINERD, "api")), { keepCase: true });
  // Files outside api/ in 1.6. Skipped when a newer api/ tree already defines the same package.
  const extras = [
    path.join(CONTAINERD, "runtime/v2/task/shim.proto"),
    path.join(CONTAINERD, "runtime/v2/runc/options/oci.proto"),
    path.join(CONTAINERD, "pkg/runtimeoptions/v1/api.proto"),
    path.join(GOSRC, "github.com/containerd/cgroups/stats/v1/metrics.proto"),
    path.join(GOSRC, "github.com/containerd/cgroups/v2/stats/metrics.proto"),
    path.join(GOSRC, "github.com/gogo/googleapis/google/rpc/status.proto"),
    UPSTREAM_REQUIREMENTS[UPSTREAM_REQUIREMENTS.length - 1].path, // grpc health
  ];
  for (const file of extras) {
    if (!fs.existsSync(file) || root.files.includes(file)) continue;
    const text = fs.readFileSync(file, "utf8");
    const pkg = /^package\s+([\w.]+)\s*;/m.exec(text)?.[1];
    const first = /^message\s+(\w+)/m.exec(text)?.[1];
    if (pkg && first && root.lookup(`${pkg}.${first}`)) continue;
    root.loadSync(file, { keepCase: true });
  }
  root.resolveAll();
  upstreamCache = root;
  return root;
}

// ---------------------------------------------------------------------------------------------
// Reflection helpers
// ---------------------------------------------------------------------------------------------

const bare = (fullName: string) => fullName.replace(/^\./, "");

/** Upstream namespaces that only carry codegen options, not wire types. */
const IGNORED_PREFIXES = ["google.protobuf.", "gogoproto.", "containerd.plugin."];

/**
 * containerd 2.x merged the two 1.6 envelope messages into containerd.types.Envelope (same fields).
 * Envelope never travels inside an Any, so the rename does not show on the wire.
 */
const RENAMED: Record<string, string> = {
  "containerd.services.events.v1.Envelope": "containerd.types.Envelope",
  "containerd.services.events.ttrpc.v1.Envelope": "containerd.types.Envelope",
};

/**
 * Fields (and methods) that containerd 2.x / newer containerd/cgroups added after the 1.6 API that
 * Debian ships. Ours must have exactly these on top of the upstream 1.6 set, nothing more.
 */
const ADDED_FIELDS: Record<string, string[]> = {
  "containerd.types.Platform": ["os_version=4", "os_features=5"],
  "containerd.events.SnapshotPrepare": ["snapshotter=5"],
  "containerd.events.SnapshotCommit": ["snapshotter=5"],
  "containerd.events.SnapshotRemove": ["snapshotter=5"],
  "containerd.services.containers.v1.Container": ["sandbox=11"],
  "containerd.services.diff.v1.ApplyRequest": ["sync_fs=4"],
  "containerd.services.diff.v1.DiffRequest": ["source_date_epoch=6"],
  "containerd.services.images.v1.CreateImageRequest": ["source_date_epoch=2"],
  "containerd.services.images.v1.UpdateImageRequest": ["source_date_epoch=3"],
  "containerd.services.images.v1.DeleteImageRequest": ["target=3"],
  "containerd.services.introspection.v1.ServerResponse": ["pid=2", "pidns=3", "deprecations=4"],
  "containerd.services.snapshots.v1.CommitSnapshotRequest": ["parent=5"],
  "containerd.services.tasks.v1.CreateTaskRequest": ["task_api_address=11", "task_api_version=12"],
  "containerd.runc.v1.Options": ["task_api_address=12", "task_api_version=13"],
  "containerd.runc.v1.CheckpointOptions": ["parent_path=10"],
  "runtimeoptions.v1.Options": ["config_body=3"],
  "io.containerd.cgroups.v2.Metrics": ["network=9"],
  "io.containerd.cgroups.v2.CPUStat": ["psi=7", "nr_bursts=8", "burst_usec=9"],
  "io.containerd.cgroups.v2.MemoryStat": [
    "max_usage=36",
    "swap_max_usage=37",
    "psi=38",
    "workingset_refault_anon=39",
    "workingset_refault_file=40",
    "workingset_activate_anon=41",
    "workingset_activate_file=42",
  ],
  "io.containerd.cgroups.v2.MemoryEvents": ["oom_group_kill=6"],
  "io.containerd.cgroups.v2.IOStat": ["psi=2"],
  "io.containerd.cgroups.v2.HugeTlbStat": ["failcnt=4"],
};
const ADDED_METHODS: Record<string, string[]> = {
  "containerd.services.introspection.v1.Introspection": ["PluginInfo"],
};

function mapName(upstreamFullName: string): string {
  const b = bare(upstreamFullName);
  return RENAMED[b] ?? b;
}

function collect(ns: protobuf.NamespaceBase, out: { types: protobuf.Type[]; enums: protobuf.Enum[]; services: protobuf.Service[] }) {
  for (const obj of ns.nestedArray) {
    if (obj instanceof protobuf.Type) {
      out.types.push(obj);
      collect(obj, out);
    } else if (obj instanceof protobuf.Enum) out.enums.push(obj);
    else if (obj instanceof protobuf.Service) out.services.push(obj);
    else if (obj instanceof protobuf.Namespace) collect(obj, out);
  }
  return out;
}

function upstreamDefinitions() {
  const all = collect(upstreamRoot(), { types: [], enums: [], services: [] });
  const keep = (o: protobuf.ReflectionObject) => !IGNORED_PREFIXES.some((p) => bare(o.fullName).startsWith(p));
  return { types: all.types.filter(keep), enums: all.enums.filter(keep), services: all.services.filter(keep) };
}

/** A wire-relevant description of one field; type names are mapped through RENAMED. */
function describeField(f: protobuf.Field): string {
  f.resolve();
  const valueType = f.resolvedType ? `${f.resolvedType instanceof protobuf.Enum ? "enum" : "message"} ${mapName(f.resolvedType.fullName)}` : f.type;
  const mf = f as protobuf.Field & { map?: boolean; keyType?: string };
  const kind = mf.map ? `map<${mf.keyType}, ${valueType}>` : `${f.repeated ? "repeated " : ""}${valueType}`;
  const packed = f.repeated && !f.resolvedType && f.type !== "string" && f.type !== "bytes" ? (f.packed ? " packed" : " unpacked") : "";
  const presence = f.partOf ? ` oneof(${f.partOf.name})` : "";
  return `${kind} ${f.name} = ${f.id}${packed}${presence}`;
}

function describeMethod(m: protobuf.Method): string {
  m.resolve();
  const req = mapName(m.resolvedRequestType!.fullName);
  const res = mapName(m.resolvedResponseType!.fullName);
  return `rpc ${m.name}(${m.requestStream ? "stream " : ""}${req}) returns (${m.responseStream ? "stream " : ""}${res})`;
}

// ---------------------------------------------------------------------------------------------
// 1. Compatibility with upstream containerd 1.6
// ---------------------------------------------------------------------------------------------

test("upstream containerd 1.6 protos are installed (apt-get install golang-github-containerd-containerd-dev)", () => {
  const missing = missingUpstream();
  assert.deepEqual(missing, [], "missing upstream proto sources:\n  " + missing.join("\n  "));
});

test("our protos load, and contain no gogoproto or go_package options", () => {
  const root = protoRoot();
  assert.ok(root.files.length > 40);
  for (const file of listProtoFiles(PROTO_DIR)) {
    const text = fs.readFileSync(file, "utf8");
    assert.doesNotMatch(text, /gogo/i, file);
    assert.doesNotMatch(text, /go_package/, file);
    assert.match(text, /^syntax = "proto3";/m, file);
  }
});

test("every upstream 1.6 message exists in ours with identical fields", () => {
  const ours = protoRoot();
  const { types } = upstreamDefinitions();
  assert.ok(types.length >= 200, `only ${types.length} upstream messages loaded`);
  const problems: string[] = [];
  for (const up of types) {
    const name = mapName(up.fullName);
    const mine = ours.lookup(name);
    if (!(mine instanceof protobuf.Type)) {
      problems.push(`missing message ${name}`);
      continue;
    }
    const upFields = new Map(up.fieldsArray.map((f) => [f.id, describeField(f)]));
    const myFields = new Map(mine.fieldsArray.map((f) => [f.id, describeField(f)]));
    for (const [id, d] of upFields) {
      if (myFields.get(id) !== d) problems.push(`${name}: upstream "${d}", ours "${myFields.get(id) ?? "(none)"}"`);
    }
    // ours may only go beyond upstream with the known 2.x additions (a newer upstream may already have them)
    const allowed = new Set(ADDED_FIELDS[name] ?? []);
    for (const f of mine.fieldsArray) {
      if (!upFields.has(f.id) && !allowed.has(`${f.name}=${f.id}`)) problems.push(`${name}: unexpected extra field ${f.name}=${f.id}`);
    }
  }
  // with Debian's 1.6 every listed addition really is missing upstream
  if (!upstreamRoot().lookup("containerd.types.Sandbox")) {
    for (const [name, fields] of Object.entries(ADDED_FIELDS)) {
      const up = upstreamRoot().lookupType(name);
      for (const nf of fields) assert.ok(!up.fields[nf.split("=")[0]], `${name}.${nf} exists upstream; drop it from ADDED_FIELDS`);
    }
  }
  assert.deepEqual(problems, []);
});

test("every upstream 1.6 enum exists in ours with identical values", () => {
  const ours = protoRoot();
  const { enums } = upstreamDefinitions();
  assert.ok(enums.length >= 4);
  for (const up of enums) {
    const name = mapName(up.fullName);
    const mine = ours.lookup(name);
    assert.ok(mine instanceof protobuf.Enum, `missing enum ${name}`);
    assert.deepEqual({ ...mine.values }, { ...up.values }, name);
  }
});

test("every upstream 1.6 service exists in ours with identical methods", () => {
  const ours = protoRoot();
  const { services } = upstreamDefinitions();
  assert.ok(services.length >= 14);
  for (const up of services) {
    const name = mapName(up.fullName);
    const mine = ours.lookup(name);
    assert.ok(mine instanceof protobuf.Service, `missing service ${name}`);
    for (const m of up.methodsArray) {
      const my: protobuf.Method | undefined = mine.methods[m.name];
      assert.ok(my, `${name}: missing rpc ${m.name}`);
      assert.equal(describeMethod(my), describeMethod(m), `${name}/${m.name}`);
    }
    const extra = mine.methodsArray.filter((m) => !up.methods[m.name]).map((m) => m.name);
    for (const m of extra) assert.ok((ADDED_METHODS[name] ?? []).includes(m), `${name}: unexpected extra rpc ${m}`);
  }
});

// Deterministic "everything set" objects, built from a type's own fields.
function populate(t: protobuf.Type, depth = 0): Record<string, unknown> {
  const obj: Record<string, unknown> = {};
  const oneofsSet = new Set<string>();
  for (const f of t.fieldsArray) {
    f.resolve();
    if (f.partOf) {
      if (oneofsSet.has(f.partOf.name)) continue;
      oneofsSet.add(f.partOf.name);
    }
    const mf = f as protobuf.Field & { map?: boolean; keyType?: string };
    const value = (i: number): unknown => {
      if (f.resolvedType instanceof protobuf.Enum) {
        const names = Object.keys(f.resolvedType.values);
        return names[names.length - 1 - (i % names.length)];
      }
      if (f.resolvedType instanceof protobuf.Type) return depth >= 3 ? {} : populate(f.resolvedType, depth + 1);
      return scalar(f.type, `${f.name}${i}`);
    };
    if (mf.map) {
      const k1 = mf.keyType === "string" ? "com.example/a" : scalar(mf.keyType!, "k");
      obj[f.name] = { [String(k1)]: value(0), ["b"]: value(1) };
    } else if (f.repeated) obj[f.name] = [value(0), value(1)];
    else obj[f.name] = value(0);
  }
  return obj;
}

function scalar(type: string, seed: string): unknown {
  switch (type) {
    case "string":
      return `v-${seed}`;
    case "bytes":
      return Buffer.from([0, 1, 0xfe, 0xff, seed.length]);
    case "bool":
      return true;
    case "double":
      return 1.25;
    case "float":
      return 0.5;
    case "int32":
    case "sint32":
    case "sfixed32":
      return -7;
    case "uint32":
    case "fixed32":
      return 4000000000;
    case "int64":
    case "sint64":
    case "sfixed64":
      return "-1234567890123";
    case "uint64":
    case "fixed64":
      return "18446744073709551615";
    default:
      throw new Error(`no sample value for ${type}`);
  }
}

const CMP: protobuf.IConversionOptions = { longs: String, enums: String, bytes: String, defaults: false, arrays: false, objects: false, oneofs: false };

test("every upstream 1.6 message encodes to the same bytes with ours, both ways", () => {
  const ours = protoRoot();
  const { types } = upstreamDefinitions();
  let checked = 0;
  for (const up of types) {
    const mine = ours.lookupType(mapName(up.fullName));
    const sample = populate(up);
    const upBytes = Buffer.from(up.encode(up.fromObject(sample)).finish());
    const myBytes = Buffer.from(mine.encode(mine.fromObject(sample)).finish());
    assert.equal(myBytes.toString("hex"), upBytes.toString("hex"), `${bare(up.fullName)}: encodings differ`);
    // upstream bytes -> ours, ours -> upstream
    assert.deepEqual(mine.toObject(mine.decode(upBytes), CMP), up.toObject(up.decode(upBytes), CMP), bare(up.fullName));
    assert.deepEqual(up.toObject(up.decode(myBytes), CMP), mine.toObject(mine.decode(myBytes), CMP), bare(up.fullName));
    // a message with our 2.x-only fields set still decodes on 1.6 (the extra fields are skipped)
    const full = populate(mine);
    const fullBytes = mine.encode(mine.fromObject(full)).finish();
    assert.deepEqual(up.toObject(up.decode(fullBytes), CMP), up.toObject(up.fromObject(full), CMP), `${bare(up.fullName)} (with 2.x fields)`);
    checked++;
  }
  assert.ok(checked >= 200, `only ${checked} messages round-tripped`);
});

test("hand-picked 1.6 messages decode from upstream-encoded bytes as ctr expects", () => {
  const up = upstreamRoot();
  const cases: Array<[string, Record<string, unknown>]> = [
    [
      "containerd.services.content.v1.WriteContentRequest",
      { action: "COMMIT", ref: "ref-1", total: 1048576, expected: "sha256:ab", offset: 4096, data: Buffer.from("hello"), labels: { "containerd.io/gc.root": "x" } },
    ],
    ["containerd.services.snapshots.v1.Info", { name: "sha256:l1", parent: "sha256:l0", kind: "COMMITTED", created_at: { seconds: -62135596800, nanos: 0 }, labels: { a: "b" } }],
    ["containerd.v1.types.Process", { id: "c1", pid: 4242, status: "PAUSING", terminal: true, exit_status: 137, exited_at: { seconds: 1700000000, nanos: 1 } }],
    ["containerd.events.TaskExit", { container_id: "c1", id: "exec-1", pid: 7, exit_status: 255, exited_at: { seconds: 1 } }],
    ["containerd.services.images.v1.ImageCreate", { name: "docker.io/library/alpine:3.20", labels: { k: "v" } }],
    ["io.containerd.cgroups.v1.Metrics", { cpu: { usage: { total: "18446744073709551615", per_cpu: ["1", "2", "3"] } }, pids: { current: 3, limit: 100 } }],
    ["io.containerd.cgroups.v2.Metrics", { memory: { usage: 1024, usage_limit: "18446744073709551615" }, hugetlb: [{ current: 1, pagesize: "2MB" }] }],
    ["containerd.runc.v1.Options", { binary_name: "runc", root: "/run/containerd/runc", systemd_cgroup: true, shim_cgroup: "/sys/fs/cgroup/x", io_uid: 1000 }],
    ["containerd.services.introspection.v1.Plugin", { type: "io.containerd.snapshotter.v1", id: "btrfs", init_err: { code: 9, message: "not a btrfs fs" } }],
  ];
  for (const [name, obj] of cases) {
    const u = up.lookupType(name);
    const bytes = u.encode(u.fromObject(obj)).finish();
    const mine = lookupType(name);
    assert.deepEqual(mine.toObject(mine.decode(bytes), CMP), u.toObject(u.decode(bytes), CMP), name);
    assert.equal(encode(name, obj).toString("hex"), Buffer.from(bytes).toString("hex"), name);
  }
});

test("our events Envelope is wire-identical to 1.6's events.v1 and ttrpc Envelope", () => {
  const up = upstreamRoot();
  const obj = { timestamp: { seconds: 1700000000, nanos: 5 }, namespace: "default", topic: "/tasks/exit", event: { type_url: "containerd.events.TaskExit", value: Buffer.from("0a026331", "hex") } };
  const mine = encode("containerd.types.Envelope", obj).toString("hex");
  for (const name of ["containerd.services.events.v1.Envelope", "containerd.services.events.ttrpc.v1.Envelope"]) {
    const t = up.lookupType(name);
    assert.equal(Buffer.from(t.encode(t.fromObject(obj)).finish()).toString("hex"), mine, name);
  }
});

test("shim task API v3 is v2 apart from the package name", () => {
  const root = protoRoot();
  const strip = (s: string) => s.replace(/containerd\.task\.v[23]\./g, "containerd.task.vN.");
  const v2 = collect(root.lookup("containerd.task.v2") as protobuf.Namespace, { types: [], enums: [], services: [] });
  const v3 = collect(root.lookup("containerd.task.v3") as protobuf.Namespace, { types: [], enums: [], services: [] });
  const dump = (d: typeof v2) => [
    ...d.types.map((t) => strip(`${bare(t.fullName)} { ${t.fieldsArray.map(describeField).join("; ")} }`)),
    ...d.services.map((s) => strip(`${bare(s.fullName)} { ${s.methodsArray.map(describeMethod).join("; ")} }`)),
  ];
  assert.equal(v2.types.length, 26);
  assert.deepEqual(dump(v3), dump(v2));
});

// ---------------------------------------------------------------------------------------------
// 2. Golden bytes for 2.x-only messages and the ttrpc envelope
// ---------------------------------------------------------------------------------------------

/** Hex of an ASCII string (the payload of a length-delimited field; tag and length are written by hand). */
const s = (text: string) => Buffer.from(text, "ascii").toString("hex");
const hex = (...parts: string[]) => parts.join("").replace(/\s+/g, "");

const GOLDEN_DECODE: protobuf.IConversionOptions = { longs: Number, enums: Number, bytes: Buffer, defaults: false, arrays: false, objects: false, oneofs: false };

function golden(typeName: string, obj: Record<string, unknown>, expectedHex: string) {
  assert.equal(encode(typeName, obj).toString("hex"), expectedHex, `${typeName}: encoding`);
  const t = lookupType(typeName);
  assert.deepEqual(t.toObject(t.decode(Buffer.from(expectedHex, "hex")), GOLDEN_DECODE), obj, `${typeName}: decoding`);
}

// Shared fragments -------------------------------------------------------------------------------

// TaskExit{container_id "c1", pid 42, exit_status 137}
const TASK_EXIT = { container_id: "c1", pid: 42, exit_status: 137 };
const TASK_EXIT_HEX = hex("0a02", s("c1"), "182a", "208901"); // 9 bytes

// Envelope{timestamp{1,2}, "default", "/tasks/exit", Any(TaskExit)}
const ENVELOPE = {
  timestamp: { seconds: 1, nanos: 2 },
  namespace: "default",
  topic: "/tasks/exit",
  event: { type_url: "containerd.events.TaskExit", value: Buffer.from(TASK_EXIT_HEX, "hex") },
};
const ENVELOPE_HEX = hex(
  "0a04 0801 1002",
  "1207", s("default"),
  "1a0b", s("/tasks/exit"),
  "2227", "0a1a", s("containerd.events.TaskExit"), "1209", TASK_EXIT_HEX,
); // 6 + 9 + 13 + 41 = 69 bytes

const REF = "docker.io/library/alpine:3.20"; // 29 = 0x1d

const OCI_REGISTRY = {
  reference: REF,
  resolver: {
    auth_stream: "creds-1",
    headers: { "x-a": "1" },
    host_dir: "/etc/containerd/certs.d",
    default_scheme: "https",
    http_debug: 2, // TRACE
    logs_stream: "logs-1",
  },
};
const OCI_REGISTRY_HEX = hex(
  "0a1d", s(REF),
  "123d", // resolver, 61 bytes
  "0a07", s("creds-1"),
  "1208", "0a03", s("x-a"), "1201", s("1"),
  "1a17", s("/etc/containerd/certs.d"),
  "2205", s("https"),
  "2802",
  "3206", s("logs-1"),
); // 94 bytes

const RUNC_OPTIONS = { binary_name: "runc", systemd_cgroup: true };
const RUNC_OPTIONS_HEX = hex("3204", s("runc"), "4801"); // field 6 (0x32), field 9 varint (0x48); 8 bytes
const RUNC_OPTIONS_ANY = { type_url: "containerd.runc.v1.Options", value: Buffer.from(RUNC_OPTIONS_HEX, "hex") };
const RUNC_OPTIONS_ANY_HEX = hex("0a1a", s("containerd.runc.v1.Options"), "1208", RUNC_OPTIONS_HEX); // 38 bytes

const IMAGE_STORE = {
  name: REF,
  labels: { l: "v" },
  platforms: [{ os: "linux", architecture: "arm64", variant: "v8" }],
  all_metadata: true,
  manifest_limit: 1,
  extra_references: [{ name: "alpine:", is_prefix: true, add_digest: true }],
  unpacks: [{ platform: { os: "linux", architecture: "arm64" }, snapshotter: "overlayfs" }],
};
const IMAGE_STORE_HEX = hex(
  "0a1d", s(REF),
  "1206", "0a01", s("l"), "1201", s("v"),
  "1a12", "0a05", s("linux"), "1205", s("arm64"), "1a02", s("v8"),
  "2001",
  "2801",
  "320d", "0a07", s("alpine:"), "1001", "2001",
  "521b", "0a0e", "0a05", s("linux"), "1205", s("arm64"), "1209", s("overlayfs"), // field 10 -> tag 0x52
); // 107 bytes

const MOUNT = { type: "bind", source: "/a", options: ["rbind", "ro"] };
const MOUNT_HEX = hex("0a04", s("bind"), "1202", s("/a"), "2205", s("rbind"), "2202", s("ro")); // 21 bytes

// Envelope and events ---------------------------------------------------------------------------------

test("golden: containerd.types.Envelope and event forwarding", () => {
  golden("containerd.types.Envelope", ENVELOPE, ENVELOPE_HEX);
  golden("containerd.services.events.ttrpc.v1.ForwardRequest", { envelope: ENVELOPE }, hex("0a45", ENVELOPE_HEX));
  golden("containerd.services.events.v1.ForwardRequest", { envelope: ENVELOPE }, hex("0a45", ENVELOPE_HEX));
  golden("containerd.events.TaskExit", TASK_EXIT, TASK_EXIT_HEX);
  golden("containerd.events.SandboxExit", { sandbox_id: "sb1", exit_status: 137, exited_at: { seconds: 3 } }, hex("0a03", s("sb1"), "108901", "1a02 0803"));
  golden("containerd.events.SandboxCreate", { sandbox_id: "sb1" }, hex("0a03", s("sb1")));
  golden("containerd.events.SnapshotPrepare", { key: "k", parent: "p", snapshotter: "overlayfs" }, hex("0a01", s("k"), "1201", s("p"), "2a09", s("overlayfs")));
  golden("containerd.events.ContentCreate", { digest: "sha256:ab", size: 5, mediaType: "m" }, hex("0a09", s("sha256:ab"), "1005", "1a01", s("m")));
});

// Transfer ---------------------------------------------------------------------------------------------

test("golden: containerd.types.transfer registry and auth messages", () => {
  golden("containerd.types.transfer.OCIRegistry", OCI_REGISTRY, OCI_REGISTRY_HEX);
  golden(
    "containerd.types.transfer.AuthRequest",
    { host: "registry-1.docker.io", reference: REF, wwwauthenticate: ["Bearer realm=x"] },
    hex("0a14", s("registry-1.docker.io"), "121d", s(REF), "1a0e", s("Bearer realm=x")),
  );
  golden(
    "containerd.types.transfer.AuthResponse",
    { authType: 1, secret: "pw", username: "me", expire_at: { seconds: 1700000000 } },
    hex("0801", "1202", s("pw"), "1a02", s("me"), "2206 08 80e2cfaa06"),
  );
});

test("golden: containerd.types.transfer image store, import/export, progress, streams", () => {
  golden("containerd.types.transfer.ImageStore", IMAGE_STORE, IMAGE_STORE_HEX);
  golden(
    "containerd.types.transfer.ImageImportStream",
    { stream: "import-1", media_type: "application/x-tar", force_compress: true },
    hex("0a08", s("import-1"), "1211", s("application/x-tar"), "1801"),
  );
  golden(
    "containerd.types.transfer.ImageExportStream",
    { stream: "export-1", media_type: "m", platforms: [{ os: "linux" }], all_platforms: true, skip_compatibility_manifest: true, skip_non_distributable: true },
    hex("0a08", s("export-1"), "1201", s("m"), "1a07 0a05", s("linux"), "2001", "2801", "3001"),
  );
  golden(
    "containerd.types.transfer.Progress",
    {
      event: "extracting",
      name: "sha256:ab",
      parents: ["index", "manifest"],
      progress: 300,
      total: 70000,
      desc: { media_type: "m", digest: "sha256:ab", size: 70000, annotations: { a: "b" } },
    },
    hex(
      "0a0a", s("extracting"),
      "1209", s("sha256:ab"),
      "1a05", s("index"),
      "1a08", s("manifest"),
      "20ac02", // 300
      "28f0a204", // 70000
      "321a", "0a01", s("m"), "1209", s("sha256:ab"), "18f0a204", "2a06 0a01", s("a"), "1201", s("b"),
    ),
  );
  golden("containerd.types.transfer.Data", { data: Buffer.from([0, 1, 0xfe, 0xff]) }, "0a040001feff");
  golden("containerd.types.transfer.WindowUpdate", { update: 65536 }, "08808004");
  golden("containerd.types.transfer.ReadStream", { stream: "r", media_type: "m" }, hex("0a01", s("r"), "1201", s("m")));
  golden("containerd.types.transfer.WriteStream", { stream: "w", media_type: "m" }, hex("0a01", s("w"), "1201", s("m")));
  golden(
    "containerd.types.transfer.ContainerPath",
    { container_id: "c1", path: "/etc", no_walk: true, preserve_ownership: true },
    hex("0a02", s("c1"), "1204", s("/etc"), "1801", "2001"),
  );
});

test("golden: Transfer and Streaming services", () => {
  const transferReq = {
    source: { type_url: "containerd.types.transfer.OCIRegistry", value: Buffer.from(OCI_REGISTRY_HEX, "hex") },
    destination: { type_url: "containerd.types.transfer.ImageStore", value: Buffer.from(IMAGE_STORE_HEX, "hex") },
    options: { progress_stream: "progress-1" },
  };
  golden(
    "containerd.services.transfer.v1.TransferRequest",
    transferReq,
    hex(
      "0a8701", "0a25", s("containerd.types.transfer.OCIRegistry"), "125e", OCI_REGISTRY_HEX, // 2+37+2+94 = 135
      "129301", "0a24", s("containerd.types.transfer.ImageStore"), "126b", IMAGE_STORE_HEX, // 2+36+2+107 = 147
      "1a0c 0a0a", s("progress-1"),
    ),
  );
  golden("containerd.services.streaming.v1.StreamInit", { id: "progress-1" }, hex("0a0a", s("progress-1")));
  // what travels on Streaming.Stream: Any(WindowUpdate{65536})
  golden(
    "google.protobuf.Any",
    { type_url: "containerd.types.transfer.WindowUpdate", value: Buffer.from("08808004", "hex") },
    hex("0a26", s("containerd.types.transfer.WindowUpdate"), "1204 08808004"),
  );
  const svc = lookupService("containerd.services.streaming.v1.Streaming");
  assert.equal(svc.methods.Stream.requestStream, true);
  assert.equal(svc.methods.Stream.responseStream, true);
  assert.equal(svc.methods.Stream.resolvedRequestType!.fullName, ".google.protobuf.Any");
  const tr = lookupService("containerd.services.transfer.v1.Transfer").methods.Transfer;
  assert.equal(tr.resolvedResponseType!.fullName, ".google.protobuf.Empty");
  assert.ok(!tr.requestStream && !tr.responseStream);
});

// Sandbox ----------------------------------------------------------------------------------------------

test("golden: containerd.types.Sandbox and the sandbox Store", () => {
  const sandbox = {
    sandbox_id: "sb1",
    runtime: { name: "io.containerd.runc.v2", options: RUNC_OPTIONS_ANY },
    spec: { type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec", value: Buffer.from("{}") },
    labels: { k: "v" },
    created_at: { seconds: 1 },
    extensions: { ext: { type_url: "t", value: Buffer.from("x") } },
    sandboxer: "podsandbox",
  };
  const sandboxHex = hex(
    "0a03", s("sb1"),
    "123f", "0a15", s("io.containerd.runc.v2"), "1226", RUNC_OPTIONS_ANY_HEX, // 2+21+2+38 = 63
    "1a3c", "0a36", s("types.containerd.io/opencontainers/runtime-spec/1/Spec"), "1202", s("{}"), // 60
    "2206 0a01", s("k"), "1201", s("v"),
    "2a02 0801",
    "3a0d 0a03", s("ext"), "1206 0a01", s("t"), "1201", s("x"), // map<string, Any> entry
    "520a", s("podsandbox"), // field 10
  );
  golden("containerd.types.Sandbox", sandbox, sandboxHex);
  golden("containerd.services.sandbox.v1.StoreCreateRequest", { sandbox: { sandbox_id: "sb1", sandboxer: "shim" } }, hex("0a0b 0a03", s("sb1"), "5204", s("shim")));
  golden(
    "containerd.services.sandbox.v1.StoreUpdateRequest",
    { sandbox: { sandbox_id: "sb1" }, fields: ["labels.a", "extensions"] },
    hex("0a05 0a03", s("sb1"), "1208", s("labels.a"), "120a", s("extensions")),
  );
  golden("containerd.services.sandbox.v1.StoreListResponse", { list: [{ sandbox_id: "a" }, { sandbox_id: "b" }] }, hex("0a03 0a01", s("a"), "0a03 0a01", s("b")));
  golden("containerd.services.sandbox.v1.StoreGetRequest", { sandbox_id: "sb1" }, hex("0a03", s("sb1")));
});

test("golden: sandbox Controller", () => {
  golden(
    "containerd.services.sandbox.v1.ControllerCreateRequest",
    { sandbox_id: "sb1", rootfs: [MOUNT], netns_path: "/var/run/netns/cni-1", annotations: { a: "b" }, sandboxer: "shim" },
    hex("0a03", s("sb1"), "1215", MOUNT_HEX, "2214", s("/var/run/netns/cni-1"), "2a06 0a01", s("a"), "1201", s("b"), "5204", s("shim")),
  );
  golden(
    "containerd.services.sandbox.v1.ControllerStartResponse",
    { sandbox_id: "sb1", pid: 4242, created_at: { seconds: 2 }, labels: { a: "b" }, address: "ttrpc+unix:///s", version: 3 },
    hex("0a03", s("sb1"), "109221", "1a02 0802", "2206 0a01", s("a"), "1201", s("b"), "2a0f", s("ttrpc+unix:///s"), "3003"),
  );
  golden(
    "containerd.services.sandbox.v1.ControllerStatusResponse",
    { sandbox_id: "sb1", pid: 1, state: "SANDBOX_READY", info: { k: "v" }, address: "a", version: 3 },
    hex("0a03", s("sb1"), "1001", "1a0d", s("SANDBOX_READY"), "2206 0a01", s("k"), "1201", s("v"), "4201", s("a"), "4803"),
  );
  golden(
    "containerd.services.sandbox.v1.ControllerUpdateRequest",
    { sandbox_id: "sb1", sandboxer: "shim", sandbox: { sandbox_id: "sb1" }, fields: ["labels", "spec"] },
    hex("0a03", s("sb1"), "1204", s("shim"), "1a05 0a03", s("sb1"), "2206", s("labels"), "2204", s("spec")),
  );
  golden("containerd.services.sandbox.v1.ControllerStopRequest", { sandbox_id: "sb1", timeout_secs: 10, sandboxer: "shim" }, hex("0a03", s("sb1"), "100a", "5204", s("shim")));
  golden("containerd.services.sandbox.v1.ControllerWaitResponse", { exit_status: 137, exited_at: { seconds: 3, nanos: 1 } }, hex("088901", "1204 0803 1001"));
  golden(
    "containerd.services.sandbox.v1.ControllerMetricsResponse",
    { metrics: { id: "sb1", data: { type_url: "io.containerd.cgroups.v2.Metrics", value: Buffer.from("0a020803", "hex") } } },
    hex("0a2f", "1203", s("sb1"), "1a28", "0a20", s("io.containerd.cgroups.v2.Metrics"), "1204 0a020803"),
  );
  golden("containerd.services.sandbox.v1.ControllerPlatformResponse", { platform: { os: "linux", architecture: "amd64" } }, hex("0a0e 0a05", s("linux"), "1205", s("amd64")));
});

test("golden: shim sandbox API (containerd.runtime.sandbox.v1)", () => {
  golden(
    "containerd.runtime.sandbox.v1.CreateSandboxRequest",
    { sandbox_id: "sb1", bundle_path: "/run/b", rootfs: [MOUNT], options: RUNC_OPTIONS_ANY, netns_path: "/n", annotations: { a: "b" } },
    hex("0a03", s("sb1"), "1206", s("/run/b"), "1a15", MOUNT_HEX, "2226", RUNC_OPTIONS_ANY_HEX, "2a02", s("/n"), "3206 0a01", s("a"), "1201", s("b")),
  );
  golden("containerd.runtime.sandbox.v1.StartSandboxResponse", { pid: 4242, created_at: { seconds: 2 } }, hex("089221", "1202 0802"));
  golden("containerd.runtime.sandbox.v1.StopSandboxRequest", { sandbox_id: "sb1", timeout_secs: 10 }, hex("0a03", s("sb1"), "100a"));
  golden(
    "containerd.runtime.sandbox.v1.SandboxStatusResponse",
    { sandbox_id: "sb1", pid: 1, state: "SANDBOX_READY", exited_at: { seconds: 3 } },
    hex("0a03", s("sb1"), "1001", "1a0d", s("SANDBOX_READY"), "3202 0803"),
  );
  golden("containerd.runtime.sandbox.v1.WaitSandboxResponse", { exit_status: 137, exited_at: { seconds: 3, nanos: 1 } }, hex("088901", "1204 0803 1001"));
  golden("containerd.runtime.sandbox.v1.PingRequest", { sandbox_id: "sb1" }, hex("0a03", s("sb1")));
  const svc = lookupService("containerd.runtime.sandbox.v1.Sandbox");
  assert.deepEqual(Object.keys(svc.methods), [
    "CreateSandbox",
    "StartSandbox",
    "Platform",
    "StopSandbox",
    "WaitSandbox",
    "SandboxStatus",
    "PingSandbox",
    "ShutdownSandbox",
    "SandboxMetrics",
  ]);
});

// Bootstrap, introspection, task v3 ----------------------------------------------------------------------

test("golden: shim bootstrap params and result", () => {
  golden(
    "containerd.runtime.bootstrap.v1.BootstrapParams",
    {
      instance_id: "c1",
      namespace: "default",
      log_level: -4, // LOG_LEVEL_DEBUG: negative enums are 10-byte varints
      containerd_version: "v2.3.0",
      containerd_ttrpc_address: "/run/containerd/containerd.sock.ttrpc",
      containerd_grpc_address: "/run/containerd/containerd.sock",
      containerd_binary: "/usr/bin/containerd",
      extensions: [{ value: RUNC_OPTIONS_ANY }],
      socket_dir: "/run/containerd/s",
    },
    hex(
      "0a02", s("c1"),
      "1207", s("default"),
      "18 fcffffffffffffffff01",
      "2206", s("v2.3.0"),
      "2a25", s("/run/containerd/containerd.sock.ttrpc"),
      "321f", s("/run/containerd/containerd.sock"),
      "3a13", s("/usr/bin/containerd"),
      "4228 0a26", RUNC_OPTIONS_ANY_HEX,
      "4a11", s("/run/containerd/s"),
    ),
  );
  // socket_dir is proto3 `optional`: an explicit empty string is on the wire, an unset one is not
  golden("containerd.runtime.bootstrap.v1.BootstrapParams", { socket_dir: "" }, "4a00");
  golden("containerd.runtime.bootstrap.v1.BootstrapParams", { log_level: -8 }, "18f8ffffffffffffffff01");
  const t = lookupType("containerd.runtime.bootstrap.v1.BootstrapParams");
  assert.equal(Object.prototype.hasOwnProperty.call(t.toObject(t.decode(Buffer.alloc(0))), "socket_dir"), false);
  golden(
    "containerd.runtime.bootstrap.v1.BootstrapResult",
    { version: 3, address: "unix:///run/containerd/s/abc", protocol: "ttrpc", metadata: { k: "v" } },
    hex("0803", "121c", s("unix:///run/containerd/s/abc"), "1a05", s("ttrpc"), "2a06 0a01", s("k"), "1201", s("v")),
  );
  const levels = protoRoot().lookupEnum("containerd.runtime.bootstrap.v1.LogLevel").values;
  assert.deepEqual({ ...levels }, {
    LOG_LEVEL_INFO: 0,
    LOG_LEVEL_TRACE: -8,
    LOG_LEVEL_DEBUG: -4,
    LOG_LEVEL_WARN: 4,
    LOG_LEVEL_ERROR: 8,
    LOG_LEVEL_FATAL: 10,
    LOG_LEVEL_PANIC: 12,
  });
});

test("golden: containerd.types.RuntimeInfo (shim -info)", () => {
  golden(
    "containerd.types.RuntimeInfo",
    { name: "io.containerd.runc.v2", version: { version: "v2.3.0", revision: "abc" }, annotations: { k: "v" } },
    hex("0a15", s("io.containerd.runc.v2"), "120d 0a06", s("v2.3.0"), "1203", s("abc"), "2a06 0a01", s("k"), "1201", s("v")),
  );
});

test("golden: shim task API v3", () => {
  golden(
    "containerd.task.v3.CreateTaskRequest",
    { id: "c1", bundle: "/b", rootfs: [{ type: "overlay", source: "overlay", options: ["lowerdir=/l"] }], stdin: "/i", options: RUNC_OPTIONS_ANY },
    hex(
      "0a02", s("c1"),
      "1202", s("/b"),
      "1a1f", "0a07", s("overlay"), "1207", s("overlay"), "220b", s("lowerdir=/l"),
      "2a02", s("/i"),
      "5226", RUNC_OPTIONS_ANY_HEX, // field 10
    ),
  );
  golden("containerd.task.v3.ConnectResponse", { shim_pid: 100, task_pid: 101, version: "3" }, hex("0864", "1065", "1a01", s("3")));
  golden("containerd.task.v3.StateResponse", { id: "c1", pid: 7, status: 2, exit_status: 0x80, exec_id: "e" }, hex("0a02", s("c1"), "1807", "2002", "488001", "5a01", s("e")));
});

// ttrpc -------------------------------------------------------------------------------------------------

test("golden: ttrpc Request and Response", () => {
  golden(
    "ttrpc.Request",
    {
      service: "containerd.task.v3.Task",
      method: "Connect",
      payload: Buffer.from(hex("0a02", s("c1")), "hex"),
      timeout_nano: 5000000000,
      metadata: [{ key: "containerd-namespace-ttrpc", value: "default" }],
    },
    hex(
      "0a17", s("containerd.task.v3.Task"),
      "1207", s("Connect"),
      "1a04 0a02", s("c1"),
      "20 80e497d012", // 5 s in ns
      "2a25 0a1a", s("containerd-namespace-ttrpc"), "1207", s("default"),
    ),
  );
  // OK: payload only, no status field
  golden("ttrpc.Response", { payload: Buffer.from("086410651a0133", "hex") }, "1207" + "086410651a0133");
  golden(
    "ttrpc.Response",
    { status: { code: 12, message: "service containerd.task.v3.Task" } },
    hex("0a23", "080c", "121f", s("service containerd.task.v3.Task")),
  );
  golden(
    "google.rpc.Status",
    { code: 5, message: "x", details: [{ type_url: "t", value: Buffer.from("01", "hex") }] },
    hex("0805", "1201", s("x"), "1a06 0a01", s("t"), "1201 01"),
  );
  golden("ttrpc.Response", {}, ""); // Shutdown reply
  golden("ttrpc.KeyValue", { key: "k", value: "v" }, hex("0a01", s("k"), "1201", s("v")));
  golden("ttrpc.StringList", { list: ["a", "b"] }, hex("0a01", s("a"), "0a01", s("b")));
});

test("golden: grpc health", () => {
  golden("grpc.health.v1.HealthCheckRequest", { service: "containerd" }, hex("0a0a", s("containerd")));
  golden("grpc.health.v1.HealthCheckResponse", { status: 1 }, "0801");
  const values = protoRoot().lookupEnum("grpc.health.v1.HealthCheckResponse.ServingStatus").values;
  assert.deepEqual({ ...values }, { UNKNOWN: 0, SERVING: 1, NOT_SERVING: 2, SERVICE_UNKNOWN: 3 });
  const h = lookupService("grpc.health.v1.Health");
  assert.equal(!!h.methods.Check.responseStream, false);
  assert.equal(h.methods.Watch.responseStream, true);
});

// ---------------------------------------------------------------------------------------------
// 3. Type URLs carried in Any
// ---------------------------------------------------------------------------------------------

test("type URLs used in Any fields resolve to our message types", () => {
  const urls = [
    // events (Envelope.event)
    ...[
      "TaskCreate",
      "TaskStart",
      "TaskExit",
      "TaskDelete",
      "TaskOOM",
      "TaskExecAdded",
      "TaskExecStarted",
      "TaskPaused",
      "TaskResumed",
      "TaskCheckpointed",
      "ContainerCreate",
      "ContainerUpdate",
      "ContainerDelete",
      "ContentCreate",
      "ContentDelete",
      "NamespaceCreate",
      "NamespaceUpdate",
      "NamespaceDelete",
      "SnapshotPrepare",
      "SnapshotCommit",
      "SnapshotRemove",
      "SandboxCreate",
      "SandboxStart",
      "SandboxExit",
    ].map((n) => `containerd.events.${n}`),
    "containerd.services.images.v1.ImageCreate",
    "containerd.services.images.v1.ImageUpdate",
    "containerd.services.images.v1.ImageDelete",
    // runtime options, checkpoint options, pids info, metrics
    "containerd.runc.v1.Options",
    "containerd.runc.v1.CheckpointOptions",
    "containerd.runc.v1.ProcessDetails",
    "runtimeoptions.v1.Options",
    "io.containerd.cgroups.v1.Metrics",
    "io.containerd.cgroups.v2.Metrics",
    // transfer objects and stream payloads
    "containerd.types.transfer.OCIRegistry",
    "containerd.types.transfer.ImageStore",
    "containerd.types.transfer.ImageImportStream",
    "containerd.types.transfer.ImageExportStream",
    "containerd.types.transfer.Progress",
    "containerd.types.transfer.AuthRequest",
    "containerd.types.transfer.AuthResponse",
    "containerd.types.transfer.Data",
    "containerd.types.transfer.WindowUpdate",
    "containerd.services.streaming.v1.StreamInit",
    "google.protobuf.Empty",
  ];
  for (const url of urls) assert.equal(lookupType(url).fullName, "." + url, url);
  // the images events share the images service package, not containerd.events
  assert.throws(() => lookupType("containerd.events.ImageCreate"));

  const services = [
    "containerd.services.containers.v1.Containers",
    "containerd.services.content.v1.Content",
    "containerd.services.diff.v1.Diff",
    "containerd.services.events.v1.Events",
    "containerd.services.events.ttrpc.v1.Events",
    "containerd.services.images.v1.Images",
    "containerd.services.introspection.v1.Introspection",
    "containerd.services.leases.v1.Leases",
    "containerd.services.namespaces.v1.Namespaces",
    "containerd.services.snapshots.v1.Snapshots",
    "containerd.services.tasks.v1.Tasks",
    "containerd.services.version.v1.Version",
    "containerd.services.transfer.v1.Transfer",
    "containerd.services.streaming.v1.Streaming",
    "containerd.services.sandbox.v1.Store",
    "containerd.services.sandbox.v1.Controller",
    "containerd.services.mounts.v1.Mounts",
    "containerd.task.v2.Task",
    "containerd.task.v3.Task",
    "containerd.runtime.sandbox.v1.Sandbox",
    "grpc.health.v1.Health",
  ];
  for (const name of services) assert.equal(lookupService(name).fullName, "." + name, name);
  const sub = lookupService("containerd.services.events.v1.Events").methods.Subscribe;
  assert.equal(sub.responseStream, true);
  assert.equal(sub.resolvedResponseType!.fullName, ".containerd.types.Envelope");
});
