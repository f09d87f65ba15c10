/**
 * Group commit for the services' LMDB databases (the `lmdb` package), and the rules every owner's
 * keys follow.
 *
 * Keys: LMDB takes at most 1978 bytes per key, and lmdb-js throws a RangeError before even looking a
 * longer one up. Names containerd takes at any length (an ingest ref, an image name) go into a key
 * through `nameKey`: as they are when short, else as a digest of the name (the record then keeps the
 * whole name). Every database opened here also refuses, whatever the caller forgot: a lookup by a key
 * that cannot fit finds nothing, a range from one is empty, and a write of one is InvalidArgument.
 */
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { open, type RootDatabase } from "lmdb";
import { errInvalidArgument } from "../errdefs";

/** LMDB's key limit (lmdb-js's maxKeySize). */
export const MAX_KEY_BYTES = 1978;
/**
 * The longest name kept as is in a key (UTF-8 bytes): two such names, a namespace and a few short
 * parts still fit in one key (a snapshot's children index holds parent and child, a lease record its
 * lease and resource).
 */
export const MAX_NAME_KEY_BYTES = 900;
const DIGEST_KEY = /^#sha256:[0-9a-f]{64}$/;

type KeyPart = string | number | boolean | null | undefined | Uint8Array;

/** An upper bound of the encoded size of `key` (ordered-binary: UTF-8 bytes and a separator per part). */
export function keyBytes(key: unknown): number {
  const parts = Array.isArray(key) ? (key as KeyPart[]) : [key as KeyPart];
  let n = 0;
  for (const p of parts) n += (typeof p === "string" ? Buffer.byteLength(p) : p instanceof Uint8Array ? p.length : 9) + 2;
  return n;
}

export const keyFits = (key: unknown): boolean => keyBytes(key) <= MAX_KEY_BYTES;

/**
 * `name` as one part of a key: itself when at most MAX_NAME_KEY_BYTES long (so records written before
 * this rule read the same), else `#sha256:<hex digest of the name>`. A short name shaped like such a
 * digest key is digested too, so no two names share a key.
 */
export function nameKey(name: string): string {
  if (Buffer.byteLength(name) <= MAX_NAME_KEY_BYTES && !DIGEST_KEY.test(name)) return name;
  return `#sha256:${crypto.createHash("sha256").update(name).digest("hex")}`;
}

/** True when `nameKey(name)` is a digest (the record must keep the name). */
export const isDigestedName = (name: string): boolean => nameKey(name) !== name;

/** Make `db` find nothing under a key that cannot fit and refuse to write one (see the header). */
function guardKeys<DB extends AnyDB>(db: DB): DB {
  type Fn = (...a: unknown[]) => unknown;
  const tooLong = (key: unknown): Error => errInvalidArgument(`database key of ${keyBytes(key)} bytes is longer than ${MAX_KEY_BYTES}`);
  // An empty range of the same type: from a key to itself.
  const nothing = { start: ["\u0000"], end: ["\u0000"] };
  const bounded = (o: { start?: unknown; end?: unknown } | undefined): boolean => !o || ((o.start === undefined || keyFits(o.start)) && (o.end === undefined || keyFits(o.end)));
  const wrap = (name: string, guarded: (original: Fn) => Fn): void => {
    const original = (db as unknown as Record<string, Fn | undefined>)[name];
    // A read-only database has no write methods.
    if (typeof original === "function") Object.assign(db, { [name]: guarded(original.bind(db)) });
  };
  wrap("get", (get) => (key, ...rest) => (keyFits(key) ? get(key, ...rest) : undefined));
  wrap("put", (put) => (key, ...rest) => {
    if (!keyFits(key)) throw tooLong(key);
    return put(key, ...rest);
  });
  wrap("remove", (remove) => (key, ...rest) => (keyFits(key) ? remove(key, ...rest) : Promise.resolve(false)));
  for (const name of ["getRange", "getKeys"]) wrap(name, (range) => (o) => range(bounded(o as { start?: unknown; end?: unknown } | undefined) ? o : { ...(o as object), ...nothing }));
  return db;
}

interface QueuedWrite {
  fn: () => unknown;
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
}

type AnyDB = RootDatabase<any, any>;

/** A key as the services store them: an ordered-binary tuple. */
export type Key = (string | number)[];

/** Every entry whose key starts with `prefix` (compared part by part), in key order. */
export function* scanPrefix<V = unknown>(db: AnyDB, prefix: Key): Generator<{ key: Key; value: V }> {
  for (const { key, value } of db.getRange({ start: prefix })) {
    const k = key as Key;
    for (let i = 0; i < prefix.length; i++) if (k[i] !== prefix[i]) return;
    yield { key: k, value: value as V };
  }
}

/**
 * Where an owner records the version of the key schema and records it publishes to readers in other
 * processes (its `services/<owner>/public` module): a one-part key, outside every owner's key space.
 */
export const SCHEMA_VERSION_KEY: Key = ["schema_version"];

/**
 * Record `version` as the schema of the owner's database `db`, committed and synced before it returns
 * (done at open, before the owner serves anything).
 */
export function stampSchemaVersion(db: AnyDB, version: number): void {
  if (db.get(SCHEMA_VERSION_KEY) !== version) db.transactionSync(() => void db.put(SCHEMA_VERSION_KEY, version));
}

/** A service's metadata database: `file` under its root `dir`, msgpack values, tuple keys. */
export function openServiceDB<K extends (string | number)[] = (string | number)[]>(dir: string, file = "meta.lmdb", readOnly = false): RootDatabase<unknown, K> {
  const p = path.join(dir, file);
  // A read-only open of a database not created yet would still create its directory.
  if (readOnly && !fs.existsSync(p)) throw Object.assign(new Error(`${p} does not exist`), { code: "ENOENT" });
  return guardKeys(open<unknown, K>({ path: p, compression: false, encoding: "msgpack", readOnly }));
}
const writeQueues = new WeakMap<AnyDB, QueuedWrite[]>();

/**
 * Run `fn` in a write transaction; resolves with its result once the transaction is committed: on disk
 * (lmdb-js's transactionSync writes the pages, fdatasyncs them and writes the meta page through its
 * O_DSYNC descriptor before it returns; overlappingSync applies to its asynchronous writes only) and
 * visible to every reader, in this process and in others. Writes queued in the same event-loop turn
 * share one transaction (group commit, one sync), each in its own child transaction, so one that
 * throws undoes only its own changes. `fn` must be synchronous and return no promise: lmdb-js would
 * hold a transaction open on a returned promise and commit it later.
 */
export function writeTxn<T>(db: AnyDB, fn: () => T): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let queue = writeQueues.get(db);
    if (!queue) writeQueues.set(db, (queue = []));
    queue.push({ fn, resolve: resolve as (v: unknown) => void, reject });
    if (queue.length === 1) setImmediate(() => flushWrites(db));
  });
}

function flushWrites(db: AnyDB): void {
  const batch = writeQueues.get(db) ?? [];
  writeQueues.set(db, []);
  if (batch.length === 0) return;
  const results: ({ ok: unknown } | { err: unknown })[] = [];
  try {
    db.transactionSync(() => {
      for (const w of batch) {
        try {
          // Nested: a child transaction, aborted alone when `fn` throws.
          results.push({ ok: db.transactionSync(w.fn) });
        } catch (err) {
          results.push({ err });
        }
      }
    });
  } catch (err) {
    for (const w of batch) w.reject(err);
    return;
  }
  batch.forEach((w, i) => {
    const r = results[i]!;
    if ("ok" in r) w.resolve(r.ok);
    else w.reject(r.err);
  });
}

/** The file of an open database (lmdb-js sets `path`; its type declarations leave it out). */
const dbPath = (db: AnyDB): string => (db as unknown as { path: string }).path;

/**
 * A read-only view of a database another process owns and writes (on this host). It is opened on first
 * use (and again at most every `retryMs` while it cannot be: the owner has not created it yet), and
 * every read runs on the latest committed snapshot, so it sees every write the owner has acknowledged
 * (the owner's `writeTxn` resolves after its commit). At most every `retryMs` it also checks that the
 * file is still the one it opened (a database removed or replaced, say with its owner's root, is
 * opened anew or, if gone, no longer read).
 */
export class ReadView<DB extends AnyDB> {
  private db: DB | undefined;
  private ino = 0;
  private failedAt = 0;
  private checkedAt = 0;

  /**
   * `schemaVersion`: read only while the database records this version of its schema (the one the
   * reader was built against; see stampSchemaVersion), checked on the snapshot each read runs on.
   */
  constructor(private readonly openDB: () => DB, private readonly retryMs = 1000, private readonly schemaVersion?: number) {}

  /**
   * `fn` on a fresh snapshot, or undefined when the database cannot be opened (yet) or records another
   * schema version than the one asked for.
   */
  read<T>(fn: (db: DB) => T): T | undefined {
    const now = Date.now();
    if (this.db && now - this.checkedAt >= this.retryMs) {
      this.checkedAt = now;
      let ino = -1;
      try {
        ino = fs.statSync(dbPath(this.db)).ino;
      } catch {
        /* gone */
      }
      if (ino !== this.ino) this.close();
    }
    if (!this.db) {
      if (this.failedAt && now - this.failedAt < this.retryMs) return undefined;
      try {
        const db = this.openDB();
        this.ino = fs.statSync(dbPath(db)).ino;
        this.db = db;
        this.checkedAt = now;
      } catch {
        this.failedAt = now;
        return undefined;
      }
    }
    // lmdb-js keeps a read transaction until a timer resets it: take the latest snapshot now.
    this.db.resetReadTxn();
    if (this.schemaVersion !== undefined && this.db.get(SCHEMA_VERSION_KEY) !== this.schemaVersion) return undefined;
    return fn(this.db);
  }

  close(): void {
    void this.db?.close();
    this.db = undefined;
  }
}
