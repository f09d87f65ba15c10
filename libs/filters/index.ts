/**
 * containerd's filter syntax: `selector ("," selector)*`, selector = `fieldpath [op value]`,
 * op one of `==`, `!=`, `~=` (regular expression); a bare fieldpath tests presence. Fields and values
 * may be quoted with `"`, `/` or `|`. Commas are AND; several filter strings are OR; "" matches all.
 */
import { errInvalidArgument } from "../errdefs";

/** Looks a field path up in some object: `present` false when the field does not exist. */
export type Adaptor = (fieldpath: string[]) => { value: string; present: boolean };

export interface Filter {
  match(adaptor: Adaptor): boolean;
}

type Op = "present" | "==" | "!=" | "~=";
interface Selector {
  fieldpath: string[];
  op: Op;
  value: string;
  re?: RegExp;
}

const ALWAYS: Filter = { match: () => true };

class Parser {
  private i = 0;
  constructor(private readonly s: string) {}

  fail(msg: string): never {
    throw errInvalidArgument(`filters: parse error: [${this.s} >|${this.s.slice(this.i)}|<]: ${msg}`);
  }
  skipSpace(): void {
    while (this.i < this.s.length && /\s/.test(this.s[this.i]!)) this.i++;
  }
  peek(): string | undefined {
    return this.s[this.i];
  }
  eof(): boolean {
    return this.i >= this.s.length;
  }

  quoted(): string {
    const q = this.s[this.i]!;
    this.i++;
    let out = "";
    while (this.i < this.s.length) {
      const c = this.s[this.i]!;
      if (c === "\\" && this.i + 1 < this.s.length) {
        const n = this.s[this.i + 1]!;
        this.i += 2;
        if (n === q) { out += q; continue; }
        if (q !== '"') { out += "\\" + n; continue; } // regex-style quotes keep other escapes
        switch (n) {
          case "n": out += "\n"; break;
          case "t": out += "\t"; break;
          case "r": out += "\r"; break;
          case "\\": out += "\\"; break;
          case "x": { out += String.fromCharCode(parseInt(this.s.slice(this.i, this.i + 2), 16)); this.i += 2; break; }
          case "u": { out += String.fromCharCode(parseInt(this.s.slice(this.i, this.i + 4), 16)); this.i += 4; break; }
          default: out += n;
        }
        continue;
      }
      if (c === q) { this.i++; return out; }
      out += c;
      this.i++;
    }
    this.fail("unterminated quoted string");
  }

  field(): string {
    this.skipSpace();
    const c = this.peek();
    if (c === '"' || c === "/" || c === "|") return this.quoted();
    const m = /^[A-Za-z0-9_]+/.exec(this.s.slice(this.i));
    if (!m || !/^[A-Za-z_]/.test(m[0])) this.fail("expected field or quoted");
    this.i += m[0].length;
    return m[0];
  }

  value(): string {
    this.skipSpace();
    const c = this.peek();
    if (c === '"' || c === "/" || c === "|") return this.quoted();
    const m = /^[^\s,]+/.exec(this.s.slice(this.i));
    if (!m) this.fail("expected value or quoted");
    this.i += m[0].length;
    return m[0];
  }

  selector(): Selector {
    const fieldpath = [this.field()];
    for (;;) {
      this.skipSpace();
      if (this.peek() !== ".") break;
      this.i++;
      fieldpath.push(this.field());
    }
    this.skipSpace();
    const two = this.s.slice(this.i, this.i + 2);
    if (two === "==" || two === "!=" || two === "~=") {
      this.i += 2;
      const value = this.value();
      const sel: Selector = { fieldpath, op: two, value };
      if (two === "~=") {
        try {
          sel.re = new RegExp(value);
        } catch (e) {
          this.fail(`invalid regular expression ${JSON.stringify(value)}: ${(e as Error).message}`);
        }
      }
      return sel;
    }
    return { fieldpath, op: "present", value: "" };
  }

  parse(): Selector[] {
    const out = [this.selector()];
    for (;;) {
      this.skipSpace();
      if (this.eof()) return out;
      if (this.peek() !== ",") this.fail("expected a comma or end of input");
      this.i++;
      out.push(this.selector());
    }
  }
}

function matchSelector(sel: Selector, adaptor: Adaptor): boolean {
  const { value, present } = adaptor(sel.fieldpath);
  switch (sel.op) {
    case "present": return present;
    case "==": return present && value === sel.value;
    case "!=": return value !== sel.value;
    case "~=": return present && sel.re!.test(value);
  }
}

/** Parse one filter string (its selectors are ANDed). */
export function parse(filter: string): Filter {
  if (filter.trim() === "") return ALWAYS;
  const sels = new Parser(filter).parse();
  return { match: (a) => sels.every((s) => matchSelector(s, a)) };
}

/** Parse several filter strings (ORed). No filters at all matches everything. */
export function parseAll(filters: readonly string[] | undefined): Filter {
  if (!filters || filters.length === 0) return ALWAYS;
  const fs = filters.map(parse);
  return { match: (a) => fs.some((f) => f.match(a)) };
}

/** Adaptor helper for a `labels`-style map at fieldpath[0] === prefix. */
export function mapField(map: Record<string, string> | undefined, rest: string[]): { value: string; present: boolean } {
  if (!map || rest.length === 0) return { value: "", present: false };
  const key = rest.join(".");
  return key in map ? { value: map[key]!, present: true } : { value: "", present: false };
}

export const NOT_PRESENT = { value: "", present: false } as const;
export const present = (value: string): { value: string; present: boolean } => ({ value, present: true });
