/**
 * What the sandbox controllers (podsandbox, shim) share: one record per sandbox in the sandbox
 * process's database under `[prefix, ns, id]`, holding the sandbox as created plus the controller's own
 * state, read and changed under a per-sandbox lock; the id checks and the new record of Create; the
 * Update of the controller's copy; the scan of the records after a restart. What a sandbox is (a pause
 * container through the tasks process, a shim's sandbox process) stays in each controller.
 */
import { namespaceRequired, validateIdentifier, type CallContext } from "#libs/context";
import { causeText, errAlreadyExists, errFailedPrecondition, errInvalidArgument, errNotFound } from "#libs/errdefs";
import { DEFAULT_SANDBOX_RUNTIME, type Sandbox, type SandboxInput } from "#libs/core/sandbox";
import { KeyedMutex } from "#libs/sync";
import { now as nowDate, storedTime } from "#libs/time";
import { scanPrefix, type SandboxDB } from "./db";
import { applySandboxFields, fromStored, toStored, type StoredSandbox } from "./store";

/** The part of a controller's record every controller has. */
export interface ControllerRecord {
  phase: string;
  sandbox: StoredSandbox;
  /** bigint nanoseconds (milliseconds, a number, in older records): libs/time */
  created: bigint | number;
}

/** A controller's record key. */
export const recordKey = (prefix: string, ns: string, id: string): string[] => [prefix, ns, id];

export abstract class RecordedController<R extends ControllerRecord> {
  private readonly locks = new KeyedMutex();

  /** `prefix` names the controller's records; `sandboxer` is the record's sandboxer when Create gives none. */
  protected constructor(protected readonly db: SandboxDB, private readonly prefix: string, private readonly sandboxer: string) {}

  protected find(ns: string, id: string): R | undefined {
    return this.db.get(recordKey(this.prefix, ns, id)) as R | undefined;
  }

  /** The record; NotFound when there is none. */
  protected get(ns: string, id: string): R {
    const r = this.find(ns, id);
    if (!r) throw errNotFound(`sandbox ${JSON.stringify(id)}`);
    return r;
  }

  /** The record in the call's namespace; NotFound when there is none. */
  protected recordOf(ctx: CallContext, id: string): R {
    return this.get(namespaceRequired(ctx), id);
  }

  protected async put(ns: string, id: string, r: R): Promise<void> {
    await this.db.put(recordKey(this.prefix, ns, id), r);
  }

  protected async remove(ns: string, id: string): Promise<void> {
    await this.db.remove(recordKey(this.prefix, ns, id));
  }

  /** Run `fn` holding the sandbox's lock. */
  protected locked<T>(ns: string, id: string, fn: () => Promise<T>): Promise<T> {
    return this.locks.run(`${ns}/${id}`, fn);
  }

  /** Run `fn` on the record of the call's namespace (NotFound when there is none), holding the sandbox's lock. */
  protected withRecord<T>(ctx: CallContext, id: string, fn: (ns: string, rec: R) => Promise<T>): Promise<T> {
    const ns = namespaceRequired(ctx);
    return this.locked(ns, id, () => fn(ns, this.get(ns, id)));
  }

  /**
   * Create's common part: check the id, and under the sandbox's lock refuse an existing record, then
   * hand `fn` the new sandbox record (runtime name defaulted, this controller as sandboxer by default).
   */
  protected createRecord(ctx: CallContext, input: SandboxInput, fn: (ns: string, sandbox: Sandbox, created: bigint) => Promise<void>): Promise<void> {
    const ns = namespaceRequired(ctx);
    const id = input.id;
    try {
      validateIdentifier(id);
    } catch (e) {
      throw errInvalidArgument(`invalid sandbox ID: ${causeText(e)}`);
    }
    return this.locked(ns, id, async () => {
      if (this.find(ns, id) !== undefined) throw errAlreadyExists(`sandbox ${JSON.stringify(id)}`);
      const now = nowDate();
      const sandbox: Sandbox = {
        id,
        runtime: { name: input.runtime?.name || DEFAULT_SANDBOX_RUNTIME, ...(input.runtime?.options ? { options: input.runtime.options } : {}) },
        ...(input.spec ? { spec: input.spec } : {}),
        labels: { ...(input.labels ?? {}) },
        extensions: { ...(input.extensions ?? {}) },
        sandboxer: input.sandboxer || this.sandboxer,
        createdAt: now,
        updatedAt: now,
      };
      await fn(ns, sandbox, storedTime(now));
    });
  }

  /** Start's precondition: the sandbox is created and not yet started. */
  protected requireCreated(id: string, rec: R): void {
    if (rec.phase !== "created") throw errFailedPrecondition(`sandbox ${JSON.stringify(id)} is ${rec.phase === "running" ? "already running" : rec.phase}, not created`);
  }

  /** Update the controller's copy of the sandbox record (fields as for the store's update). */
  async update(ctx: CallContext, id: string, sandbox: SandboxInput, fields: readonly string[] = []): Promise<void> {
    await this.withRecord(ctx, id, async (ns, rec) => {
      const next = applySandboxFields(fromStored(id, rec.sandbox), { ...sandbox, id }, fields);
      next.updatedAt = nowDate();
      rec.sandbox = toStored(next);
      await this.put(ns, id, rec);
    });
  }

  /** Every record of this controller, read at once (so the caller may change or remove records), for recovery. */
  protected records(): { ns: string; id: string; rec: R }[] {
    return [...scanPrefix<R>(this.db, [this.prefix])].map(({ key, value }) => ({ ns: String(key[1]), id: String(key[2]), rec: value }));
  }
}
