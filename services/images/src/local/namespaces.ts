/** The local NamespaceStore, kept in the images process's LMDB database. */
import { writeTxn } from "#libs/lmdb";
import { validateIdentifier, type CallContext } from "#libs/context";
import { causeText, errAlreadyExists, errFailedPrecondition, errInvalidArgument, errNotFound, errUnavailable, isNotImplemented } from "#libs/errdefs";
import { applyMapMask, compactLabels, validateLabels } from "#libs/fieldmask";
import type { EventRecorder } from "#libs/events";
import { NAMESPACE_EVENTS, type Namespace, type NamespaceStore } from "#libs/core/namespaces";
import type { MetaDB } from "./db";
import { namespaceKey, readNamespace, type StoredNamespace } from "../../public";
import { storedTime } from "#libs/time";

/** Reports what kinds of objects (e.g. "blobs", "containers") still live in a namespace. */
export interface NamespaceUsage {
  /** The holder's name, for errors. */
  name: string;
  inUse(ctx: CallContext, ns: string): Promise<string[]>;
}

/** The names of every stored namespace. */
export function namespaceNames(db: MetaDB): string[] {
  return [...new Set([...db.getKeys({ start: ["ns"], end: ["ns\0"] })].filter((k) => k.length === 2).map((k) => String(k[1])))];
}

/**
 * Inside a write transaction: create the namespace if it does not exist, as containerd does on the first
 * write into a namespace (no event, like containerd's implicit bucket creation).
 */
export function ensureNamespaceInTxn(db: MetaDB, name: string): void {
  if (db.get(namespaceKey(name)) === undefined) void db.put(namespaceKey(name), { labels: {}, created_at: storedTime() } satisfies StoredNamespace);
}

/** containerd's order (images, blobs, containers, snapshots), then what it does not check. */
const KIND_ORDER = ["images", "blobs", "containers", "snapshots", "sandboxes", "leases"];
function orderKinds(kinds: string[]): string[] {
  const rank = (k: string): number => {
    const i = KIND_ORDER.findIndex((p) => k === p || k.startsWith(p + " "));
    return i < 0 ? KIND_ORDER.length : i;
  };
  return [...new Set(kinds)].sort((a, b) => rank(a) - rank(b));
}

/** What this process itself still holds in a namespace (checked inside the deleting transaction). */
export type LocalNamespaceUsage = (ns: string) => string[];

export class LocalNamespaceStore implements NamespaceStore {
  constructor(
    private readonly db: MetaDB,
    private readonly events: EventRecorder,
    private readonly usage: NamespaceUsage[],
    private readonly localUsage: LocalNamespaceUsage = () => [],
  ) {}

  private validate(ns: Namespace): void {
    try {
      validateIdentifier(ns.name);
    } catch (e) {
      throw errInvalidArgument(`namespace validation: ${(e as Error).message.replace(/: invalid argument$/, "")}`);
    }
    const bad = validateLabels(ns.labels);
    if (bad) throw errInvalidArgument(bad);
  }

  /** Events about a namespace go out in the caller's namespace, as containerd's do; else in the namespace itself. */
  private eventCtx(ctx: CallContext, name: string): CallContext {
    return ctx.namespace ? ctx : { ...ctx, namespace: name };
  }

  /** A namespace that does not exist (yet) reads as one with no labels, as in containerd: nothing is created. */
  async get(_ctx: CallContext, name: string): Promise<Namespace> {
    return readNamespace(this.db, name) ?? { name, labels: {} };
  }

  async list(_ctx: CallContext): Promise<Namespace[]> {
    const out: Namespace[] = [];
    for (const { key: k, value } of this.db.getRange({ start: ["ns"], end: ["ns", "\uffff"] })) {
      out.push({ name: String(k[1]), labels: (value as StoredNamespace).labels });
    }
    return out;
  }

  async create(ctx: CallContext, ns: Namespace): Promise<Namespace> {
    this.validate(ns);
    const labels = compactLabels(ns.labels);
    const created = await writeTxn(this.db, () => {
      if (this.db.get(namespaceKey(ns.name)) !== undefined) return false;
      void this.db.put(namespaceKey(ns.name), { labels, created_at: storedTime() } satisfies StoredNamespace);
      this.events.record(this.db, this.eventCtx(ctx, ns.name), NAMESPACE_EVENTS.create.topic, NAMESPACE_EVENTS.create.type, { name: ns.name, labels });
      return true;
    });
    if (!created) throw errAlreadyExists(`namespace ${JSON.stringify(ns.name)}`);
    return { name: ns.name, labels };
  }

  /**
   * Sets labels; a namespace that does not exist yet is created by the first label it gets (a mask, or a
   * full replacement with at least one label), as containerd's Update (the Go client's SetLabel) does.
   */
  async update(ctx: CallContext, ns: Namespace, paths: string[]): Promise<Namespace> {
    for (const p of paths) {
      if (p !== "labels" && !p.startsWith("labels.")) throw errInvalidArgument(`cannot update ${JSON.stringify(p)} field on namespace ${JSON.stringify(ns.name)}`);
    }
    const bad = validateLabels(ns.labels);
    if (bad) throw errInvalidArgument(bad);
    if (readNamespace(this.db, ns.name) === undefined) this.validate(ns); // about to create it
    const result = await writeTxn(this.db, () => {
      const cur = this.db.get(namespaceKey(ns.name)) as StoredNamespace | undefined;
      const create = cur || paths.length || Object.keys(ns.labels).length;
      const labels = !create ? {} : paths.length ? applyMapMask("labels", cur?.labels ?? {}, ns.labels, paths) : compactLabels(ns.labels);
      if (create) void this.db.put(namespaceKey(ns.name), { labels, created_at: cur?.created_at ?? Date.now() } satisfies StoredNamespace);
      this.events.record(this.db, this.eventCtx(ctx, ns.name), NAMESPACE_EVENTS.update.topic, NAMESPACE_EVENTS.update.type, { name: ns.name, labels });
      return labels;
    });
    return { name: ns.name, labels: result };
  }

  async delete(ctx: CallContext, name: string): Promise<void> {
    if (this.db.get(namespaceKey(name)) === undefined) throw errNotFound(`namespace ${JSON.stringify(name)}`);
    const kinds: string[] = [...this.localUsage(name)];
    for (const u of this.usage) {
      try {
        kinds.push(...(await u.inUse(ctx, name)));
      } catch (e) {
        if (isNotImplemented(e)) continue; // a service that does not implement its API yet holds nothing
        throw errUnavailable(`namespace ${JSON.stringify(name)}: cannot verify it is empty: ${u.name}: ${causeText(e)}`);
      }
    }
    if (kinds.length) throw errFailedPrecondition(`namespace ${JSON.stringify(name)} must be empty, but it still has ${orderKinds(kinds).join(", ")}`);
    const removed = await writeTxn(this.db, () => {
      if (this.db.get(namespaceKey(name)) === undefined) return false;
      const local = this.localUsage(name);
      if (local.length) return local;
      void this.db.remove(namespaceKey(name));
      this.events.record(this.db, this.eventCtx(ctx, name), NAMESPACE_EVENTS.delete.topic, NAMESPACE_EVENTS.delete.type, { name });
      return true;
    });
    if (!removed) throw errNotFound(`namespace ${JSON.stringify(name)}`);
    if (Array.isArray(removed)) throw errFailedPrecondition(`namespace ${JSON.stringify(name)} must be empty, but it still has ${orderKinds(removed).join(", ")}`);
  }
}
