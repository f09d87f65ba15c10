/**
 * Wall-clock times with nanosecond precision, the one converter every process uses between its domain
 * `Date`s, protobuf Timestamps and stored records. containerd keeps times to the nanosecond and its
 * clients compare them with times they took themselves, so nothing may cut them to JS milliseconds.
 *
 * A time is a `Date` (for code that only needs milliseconds) which may be a `PreciseDate` that also
 * carries the nanoseconds within its millisecond. Stored records hold bigint nanoseconds since the
 * epoch; records written before this held numbers of milliseconds, which still read. No dependencies:
 * the shim uses it too.
 */

const NS_PER_MS = 1_000_000n;
const NS_PER_S = 1_000_000_000n;

/** floor(a / b) for bigints (BigInt division truncates towards zero). */
function floorDiv(a: bigint, b: bigint): bigint {
  const q = a / b;
  return a % b !== 0n && a < 0n !== b < 0n ? q - 1n : q;
}

/** A Date that remembers the nanoseconds within its millisecond (lost by `new Date(d)` and `getTime()`). */
export class PreciseDate extends Date {
  /** 0..999999: what the millisecond value leaves out. */
  readonly subMsNanos: number;

  constructor(ns: bigint) {
    const ms = floorDiv(ns, NS_PER_MS);
    super(Number(ms));
    this.subMsNanos = Number(ns - ms * NS_PER_MS);
  }

  /** RFC 3339 with all nine digits of the fraction. */
  toPreciseISOString(): string {
    const nanos = (this.getUTCMilliseconds() * 1_000_000 + this.subMsNanos).toString().padStart(9, "0");
    return this.toISOString().replace(/\.\d{3}Z$/, `.${nanos}Z`);
  }
}

/** Nanoseconds since the epoch of a Date (its sub-millisecond part when it is a PreciseDate), ms number or bigint ns. */
export function nanosOf(d: Date | number | bigint): bigint {
  if (typeof d === "bigint") return d;
  if (typeof d === "number") return BigInt(Math.round(d * 1e6));
  const ms = BigInt(d.getTime()) * NS_PER_MS;
  return d instanceof PreciseDate ? ms + BigInt(d.subMsNanos) : ms;
}

/** The Date for nanoseconds since the epoch. */
export function dateFromNanos(ns: bigint): PreciseDate {
  return new PreciseDate(ns);
}

// The wall clock read to the nanosecond: Date.now() gives milliseconds only, so the monotonic
// high-resolution counter is anchored to the process's time origin (taken from the system clock to the
// microsecond) and kept within the millisecond Date.now() reports: when the wall clock is set, it is
// re-anchored there. Within a process it never repeats a value while the wall clock stands still.
let anchorWall = BigInt(Math.round(performance.timeOrigin * 1000)) * 1000n;
let anchorMono = process.hrtime.bigint() - BigInt(Math.round(performance.now() * 1e6));
let last = 0n;

/** The current wall-clock time in nanoseconds since the epoch. */
export function nowNanos(): bigint {
  const mono = process.hrtime.bigint();
  const wallMs = BigInt(Date.now()) * NS_PER_MS;
  let t = anchorWall + (mono - anchorMono);
  if (t < wallMs - NS_PER_MS || t >= wallMs + 2n * NS_PER_MS) {
    anchorWall = wallMs;
    anchorMono = mono;
    t = wallMs;
  }
  if (t < wallMs) t = wallMs;
  else if (t >= wallMs + NS_PER_MS) t = wallMs + NS_PER_MS - 1n;
  if (t <= last && last - t < NS_PER_MS) t = last + 1n;
  last = t;
  return t;
}

/** The current time as a Date that keeps its nanoseconds. */
export function now(): PreciseDate {
  return new PreciseDate(nowNanos());
}

/** A protobuf `google.protobuf.Timestamp` as a plain object. */
export interface Timestamp {
  seconds: number;
  nanos: number;
}

/** The Timestamp of a time (now when omitted): a Date (precise or not), a number of ms, or bigint ns. */
export function toTimestamp(d: Date | number | bigint = nowNanos()): Timestamp {
  const ns = nanosOf(d);
  const seconds = floorDiv(ns, NS_PER_S);
  return { seconds: Number(seconds), nanos: Number(ns - seconds * NS_PER_S) };
}

/** The time of a Timestamp, nanoseconds kept; undefined when absent. */
export function fromTimestamp(t: { seconds?: number | string | bigint | { toString(): string } | null; nanos?: number | null } | null | undefined): PreciseDate | undefined {
  if (!t) return undefined;
  return new PreciseDate(BigInt(String(t.seconds ?? 0)) * NS_PER_S + BigInt(Math.trunc(Number(t.nanos ?? 0))));
}

/** What a record stores for a time: bigint nanoseconds since the epoch. */
export function storedTime(d: Date | bigint = nowNanos()): bigint {
  return nanosOf(d);
}

/** A stored time as bigint nanoseconds: bigint as stored now, or a number of milliseconds in older records. */
export function storedNanos(v: unknown): bigint {
  if (typeof v === "bigint") return v;
  if (typeof v === "number" && Number.isFinite(v)) return BigInt(Math.round(v)) * NS_PER_MS;
  return 0n;
}

/** The Date of a stored time (see storedNanos). */
export function dateFromStored(v: unknown): PreciseDate {
  return new PreciseDate(storedNanos(v));
}

/** The later of a stored time and now, plus `strictlyAfter` nanoseconds past the stored one at least. */
export function laterThan(stored: unknown, strictlyAfter = 0n): bigint {
  const floor = storedNanos(stored) + strictlyAfter;
  const n = nowNanos();
  return n > floor ? n : floor;
}
