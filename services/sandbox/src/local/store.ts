/** The local SandboxStore: sandbox records in the sandbox process's LMDB database, per namespace. */
import { namespaceRequired, validateIdentifier, type CallContext } from "#libs/context";
import { causeText, errAlreadyExists, errInvalidArgument, errNotFound } from "#libs/errdefs";
import { applyMapMask, compactLabels, validateLabels } from "#libs/fieldmask";
import { parseAll } from "#libs/filters";
import type { Sandbox, SandboxInput, SandboxStore, TypedValue } from "#libs/core/sandbox";
import { sandboxAdaptor } from "./adaptors";
import { scanPrefix, type SandboxDB, type StoredAny } from "./db";
import { dateFromNanos, dateFromStored, laterThan, now as nowDate, storedTime } from "#libs/time";

export interface StoredSandbox {
  runtime: { name: string; options?: StoredAny };
  spec?: StoredAny;
  labels: Record<string, string>;
  extensions: Record<string, StoredAny>;
  sandboxer: string;
  /** bigint nanoseconds (milliseconds, a number, in older records): libs/time */
  created: bigint | number;
  updated: bigint | number;
}

export const sandboxKey = (ns: string, id: string): string[] => ["sb", ns, id];

const toStoredAny = (a: TypedValue | undefined): StoredAny | undefined => (a && (a.typeUrl || a.value.length) ? { t: a.typeUrl, v: Buffer.from(a.value) } : undefined);
const fromStoredAny = (a: StoredAny | undefined): TypedValue | undefined => (a ? { typeUrl: a.t, value: Buffer.from(a.v) } : undefined);

export function toStored(sb: Omit<Sandbox, "id"> & { id?: string }): StoredSandbox {
  const out: StoredSandbox = {
    runtime: { name: sb.runtime.name },
    labels: compactLabels(sb.labels),
    extensions: {},
    sandboxer: sb.sandboxer,
    created: storedTime(sb.createdAt),
    updated: storedTime(sb.updatedAt),
  };
  const opts = toStoredAny(sb.runtime.options);
  if (opts) out.runtime.options = opts;
  const spec = toStoredAny(sb.spec);
  if (spec) out.spec = spec;
  for (const [k, v] of Object.entries(sb.extensions)) {
    const a = toStoredAny(v);
    if (a) out.extensions[k] = a;
  }
  return out;
}

export function fromStored(id: string, s: StoredSandbox): Sandbox {
  const sb: Sandbox = {
    id,
    runtime: { name: s.runtime.name },
    labels: { ...s.labels },
    extensions: Object.fromEntries(Object.entries(s.extensions).map(([k, v]) => [k, fromStoredAny(v)!])),
    sandboxer: s.sandboxer,
    createdAt: dateFromStored(s.created),
    updatedAt: dateFromStored(s.updated),
  };
  if (s.runtime.options) sb.runtime.options = fromStoredAny(s.runtime.options);
  if (s.spec) sb.spec = fromStoredAny(s.spec);
  return sb;
}

/**
 * Apply containerd's sandbox update field paths to `current` (a copy is returned). Shared by the store
 * and the controllers (which keep their own copy of the record). InvalidArgument for an unknown field.
 */
export function applySandboxFields(current: Sandbox, incoming: SandboxInput, fields?: readonly string[]): Sandbox {
  let paths = fields ?? [];
  if (paths.length === 0) {
    paths = ["labels", "extensions", "spec", "runtime"];
    if (current.runtime.name !== incoming.runtime.name) throw errInvalidArgument("sandbox.Runtime.Name field is immutable");
  }
  const next: Sandbox = { ...current, runtime: { ...current.runtime }, labels: { ...current.labels }, extensions: { ...current.extensions } };
  const isEmptyAny = (v: TypedValue | undefined): boolean => !v || (!v.typeUrl && v.value.length === 0);
  for (const p of paths) {
    if (p === "labels" || p.startsWith("labels.")) {
      next.labels = applyMapMask("labels", next.labels, incoming.labels ?? {}, [p]);
    } else if (p === "extensions" || p.startsWith("extensions.")) {
      next.extensions = applyMapMask<TypedValue>("extensions", next.extensions, incoming.extensions ?? {}, [p], isEmptyAny);
    } else if (p === "spec") {
      next.spec = isEmptyAny(incoming.spec) ? undefined : incoming.spec;
    } else if (p === "runtime") {
      next.runtime = { name: incoming.runtime?.name ?? "", ...(incoming.runtime?.options ? { options: incoming.runtime.options } : {}) };
    } else {
      throw errInvalidArgument(`cannot update ${JSON.stringify(p)} field on sandbox ${JSON.stringify(current.id)}`);
    }
  }
  return next;
}

export function validateSandbox(sb: Pick<Sandbox, "id" | "runtime" | "labels">): void {
  try {
    validateIdentifier(sb.id);
  } catch (e) {
    throw errInvalidArgument(`invalid sandbox ID: ${causeText(e)}`);
  }
  if (!sb.runtime?.name) throw errInvalidArgument("sandbox.Runtime.Name must be set");
  const bad = validateLabels(sb.labels);
  if (bad) throw errInvalidArgument(`invalid labels: ${bad}`);
}

export interface LocalSandboxStoreOptions {
  db: SandboxDB;
  /** Called before the first write into a namespace (containerd creates namespaces on first use). */
  ensureNamespace?: (ctx: CallContext, ns: string) => Promise<void>;
}

export class LocalSandboxStore implements SandboxStore {
  private readonly db: SandboxDB;
  constructor(private readonly opts: LocalSandboxStoreOptions) {
    this.db = opts.db;
  }

  async create(ctx: CallContext, input: SandboxInput): Promise<Sandbox> {
    const ns = namespaceRequired(ctx);
    const now = nowDate();
    const sb: Sandbox = {
      id: input.id,
      runtime: { name: input.runtime?.name ?? "", ...(input.runtime?.options ? { options: input.runtime.options } : {}) },
      ...(input.spec ? { spec: input.spec } : {}),
      labels: compactLabels(input.labels),
      extensions: { ...(input.extensions ?? {}) },
      sandboxer: input.sandboxer ?? "",
      createdAt: now,
      updatedAt: now,
    };
    validateSandbox(sb);
    await this.opts.ensureNamespace?.(ctx, ns);
    const stored = toStored(sb);
    const created = await this.db.transaction(() => {
      if (this.db.get(sandboxKey(ns, sb.id)) !== undefined) return false;
      void this.db.put(sandboxKey(ns, sb.id), stored);
      return true;
    });
    if (!created) throw errAlreadyExists(`sandbox ${JSON.stringify(sb.id)}`);
    return fromStored(sb.id, stored);
  }

  async update(ctx: CallContext, input: SandboxInput, fields: readonly string[] = []): Promise<Sandbox> {
    const ns = namespaceRequired(ctx);
    const result = await this.db.transaction(() => {
      const cur = this.db.get(sandboxKey(ns, input.id)) as StoredSandbox | undefined;
      if (!cur) return undefined;
      const next = applySandboxFields(fromStored(input.id, cur), input, fields);
      next.updatedAt = dateFromNanos(laterThan(cur.updated, 1n));
      validateSandbox(next);
      const stored = toStored(next);
      void this.db.put(sandboxKey(ns, input.id), stored);
      return stored;
    });
    if (!result) throw errNotFound(`sandbox ${JSON.stringify(input.id)}`);
    return fromStored(input.id, result);
  }

  async get(ctx: CallContext, id: string): Promise<Sandbox> {
    const ns = namespaceRequired(ctx);
    const v = this.db.get(sandboxKey(ns, id)) as StoredSandbox | undefined;
    if (!v) throw errNotFound(`sandbox ${JSON.stringify(id)}`);
    return fromStored(id, v);
  }

  async list(ctx: CallContext, filters: readonly string[] = []): Promise<Sandbox[]> {
    const ns = namespaceRequired(ctx);
    const f = parseAll(filters);
    const out: Sandbox[] = [];
    for (const { key, value } of scanPrefix<StoredSandbox>(this.db, ["sb", ns])) {
      const sb = fromStored(String(key[2]), value);
      if (f.match(sandboxAdaptor(sb))) out.push(sb);
    }
    return out;
  }

  async delete(ctx: CallContext, id: string): Promise<void> {
    const ns = namespaceRequired(ctx);
    const removed = await this.db.transaction(() => {
      if (this.db.get(sandboxKey(ns, id)) === undefined) return false;
      void this.db.remove(sandboxKey(ns, id));
      return true;
    });
    if (!removed) throw errNotFound(`sandbox ${JSON.stringify(id)}`);
  }
}
