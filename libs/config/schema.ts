/**
 * A small schema layer for the TOML configuration: each table Flotilla reads declares its keys and
 * their types, and a value of the wrong type or a key no table declares is an error naming the key
 * with its full table path (`[plugins."io.containerd.gc.v1.scheduler"] pause_threshold: expected a
 * number, got string`), instead of a default taking its place unnoticed.
 *
 * Values come back as TOML gave them (integers as numbers); nothing here fills defaults: each reader
 * keeps its own, with the type the schema promises.
 */
import { errInvalidArgument, type FlotillaError } from "../errdefs";

/** A key's place: the table names from the top, then the key (`["plugins", "io.containerd.gc.v1.scheduler", "pause_threshold"]`). */
export type KeyPath = readonly string[];

export interface Schema<T> {
  /** What a value must be, after "expected" ("a string", "a list of strings", ...). */
  readonly expected: string;
  /** The value, checked (throws a ConfigError naming `at`). */
  check(v: unknown, at: KeyPath): T;
}

export type Infer<S> = S extends Schema<infer T> ? T : never;

const BARE = /^[A-Za-z0-9_-]+$/;
const tomlKey = (k: string): string => (BARE.test(k) ? k : JSON.stringify(k));

/** `[a."b.c"] key`, or `key` at the top level; a list's items are `key[i]`. */
export function formatPath(at: KeyPath): string {
  const seg = (k: string): string => {
    const m = /^(.*?)((?:\[\d+\])*)$/.exec(k)!;
    return tomlKey(m[1]!) + m[2]!;
  };
  const key = at.length ? seg(at[at.length - 1]!) : "(top level)";
  return at.length > 1 ? `[${at.slice(0, -1).map(seg).join(".")}] ${key}` : key;
}

/** A configuration error at a key: `<path>: <what>` (the file is added by whoever loaded it). */
export function configError(at: KeyPath, what: string): FlotillaError {
  return errInvalidArgument(`${formatPath(at)}: ${what}`);
}

/** The TOML type of a parsed value, as a user wrote it. */
export function tomlType(v: unknown): string {
  if (typeof v === "string") return "string";
  if (typeof v === "boolean") return "boolean";
  if (typeof v === "bigint") return "integer";
  if (typeof v === "number") return Number.isInteger(v) ? "integer" : "float";
  if (Array.isArray(v)) return "array";
  if (v instanceof Date) return "datetime";
  if (v && typeof v === "object") return "table";
  return typeof v;
}

const wrong = (s: { expected: string }, v: unknown, at: KeyPath): FlotillaError => configError(at, `expected ${s.expected}, got ${tomlType(v)}`);

export const isTable = (v: unknown): v is Record<string, unknown> => !!v && typeof v === "object" && !Array.isArray(v) && !(v instanceof Date);

function scalar<T>(expected: string, ok: (v: unknown) => boolean, conv: (v: unknown) => T = (v) => v as T): Schema<T> {
  const s: Schema<T> = {
    expected,
    check(v, at) {
      if (!ok(v)) throw wrong(s, v, at);
      return conv(v);
    },
  };
  return s;
}

function ranged(s: Schema<number>, min?: number, max?: number): Schema<number> {
  if (min === undefined && max === undefined) return s;
  return {
    expected: s.expected,
    check(v, at) {
      const n = s.check(v, at);
      if ((min !== undefined && n < min) || (max !== undefined && n > max)) {
        throw configError(at, `${n} is out of range (${min ?? "-∞"} to ${max ?? "∞"})`);
      }
      return n;
    },
  };
}

const isNum = (v: unknown): boolean => (typeof v === "number" && Number.isFinite(v)) || typeof v === "bigint";

/** Go's duration syntax, as containerd reads it: "300ms", "1.5s", "1m30s", "0". */
export function parseDuration(text: string): number | undefined {
  const t = text.trim();
  if (t === "0") return 0;
  const re = /(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)/gy;
  const unit: Record<string, number> = { ns: 1e-6, us: 1e-3, "µs": 1e-3, "μs": 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
  let ms = 0;
  let m: RegExpExecArray | null;
  let end = 0;
  while ((m = re.exec(t)) !== null) {
    ms += Number(m[1]) * unit[m[2]!]!;
    end = re.lastIndex;
  }
  return end > 0 && end === t.length ? ms : undefined;
}

export const schema = {
  string: (): Schema<string> => scalar("a string", (v) => typeof v === "string"),
  bool: (): Schema<boolean> => scalar("a boolean", (v) => typeof v === "boolean"),
  /** An integer (TOML integer, or a float with no fraction). */
  int: (range: { min?: number; max?: number } = {}): Schema<number> =>
    ranged(scalar("an integer", (v) => isNum(v) && Number.isInteger(Number(v)), Number), range.min, range.max),
  number: (range: { min?: number; max?: number } = {}): Schema<number> => ranged(scalar("a number", isNum, Number), range.min, range.max),
  /** A duration string ("100ms", "1s", "1m30s"); the value is in milliseconds. */
  duration: (): Schema<number> => {
    const s: Schema<number> = {
      expected: 'a duration (e.g. "100ms", "1s")',
      check(v, at) {
        const ms = typeof v === "string" ? parseDuration(v) : undefined;
        if (ms === undefined) throw typeof v === "string" ? configError(at, `expected ${s.expected}, got ${JSON.stringify(v)}`) : wrong(s, v, at);
        return ms;
      },
    };
    return s;
  },
  oneOf: <const V extends readonly string[]>(values: V): Schema<V[number]> => {
    const s: Schema<V[number]> = {
      expected: `one of ${values.map((x) => JSON.stringify(x)).join(", ")}`,
      check(v, at) {
        if (typeof v !== "string") throw wrong(s, v, at);
        if (!values.includes(v)) throw configError(at, `expected ${s.expected}, got ${JSON.stringify(v)}`);
        return v as V[number];
      },
    };
    return s;
  },
  list: <T>(item: Schema<T>): Schema<T[]> => {
    const s: Schema<T[]> = {
      expected: `a list of ${item.expected.replace(/^an? /, "")}s`,
      check(v, at) {
        if (!Array.isArray(v)) throw wrong(s, v, at);
        return v.map((x, i) => item.check(x, [...at.slice(0, -1), `${at[at.length - 1] ?? ""}[${i}]`]));
      },
    };
    return s;
  },
  strings: (): Schema<string[]> => schema.list(schema.string()),
  /** A string, or a list of them (a list either way). */
  stringOrList: (): Schema<string[]> => {
    const list = schema.strings();
    const s: Schema<string[]> = {
      expected: "a string or a list of strings",
      check: (v, at) => {
        if (typeof v === "string") return [v];
        if (!Array.isArray(v)) throw wrong(s, v, at);
        return list.check(v, at);
      },
    };
    return s;
  },
  /** A table with these keys, each optional; any other key is an error. */
  table: <F extends Record<string, Schema<unknown>>>(fields: F): TableSchema<F> => {
    const s: TableSchema<F> = {
      expected: "a table",
      fields,
      check(v, at) {
        if (!isTable(v)) throw wrong(s, v, at);
        const out: Record<string, unknown> = {};
        for (const [k, x] of Object.entries(v)) {
          const f = fields[k];
          if (!f) throw configError([...at, k], "unknown key");
          out[k] = f.check(x, [...at, k]);
        }
        return out as TableOf<F>;
      },
    };
    return s;
  },
  /** A table whose keys are names of the caller's choosing, each value of one schema. */
  map: <T>(value: Schema<T>): Schema<Record<string, T>> => {
    const s: Schema<Record<string, T>> = {
      expected: "a table",
      check(v, at) {
        if (!isTable(v)) throw wrong(s, v, at);
        return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, value.check(x, [...at, k])]));
      },
    };
    return s;
  },
};

export type TableOf<F> = { [K in keyof F]?: Infer<F[K]> };
export interface TableSchema<F extends Record<string, Schema<unknown>>> extends Schema<TableOf<F>> {
  readonly fields: F;
}
