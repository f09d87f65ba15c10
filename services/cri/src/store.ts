/**
 * The CRI process's state: pods and containers in LMDB (`<root>/cri/meta.lmdb`). Every write is a
 * committed transaction before it is acknowledged, so after kill -9 the records are as last written;
 * a record's name is reserved in the same transaction (a second pod or container of the same CRI name
 * is refused, as containerd's name index refuses it).
 *
 * Keys (ordered-binary arrays):
 *   ["pod", id]              -> PodRecord
 *   ["ctr", id]              -> ContainerRecord
 *   ["name", kind, name]     -> id       (kind "pod" or "ctr")
 */
import type { RootDatabase } from "lmdb";
import { errAlreadyExists, errInvalidArgument, errNotFound } from "#libs/errdefs";
import { openServiceDB, scanPrefix, writeTxn } from "#libs/lmdb";
import type { Decoded } from "#libs/proto/types";

export type PodSandboxConfig = Decoded["runtime.v1.PodSandboxConfig"];
export type ContainerConfig = Decoded["runtime.v1.ContainerConfig"];

/** How a pod holds a namespace (runtime.v1 NamespaceMode): 0 POD, 1 CONTAINER, 2 NODE, 3 TARGET. */
export const NamespaceMode = { POD: 0, CONTAINER: 1, NODE: 2, TARGET: 3 } as const;

/** A pod as the CRI process records it (LMDB, `store.pods`). */
export interface PodRecord {
  id: string;
  /** containerd's CRI name of the pod: `<name>_<namespace>_<uid>_<attempt>` (unique among pods). */
  name: string;
  /** The RunPodSandbox config, as decoded. */
  config: PodSandboxConfig;
  /** The handler asked for ("" = the default) and the task runtime it maps to. */
  runtimeHandler: string;
  runtimeName: string;
  /** `creating` until the sandbox runs; `ready` while its pause task runs; `notready` once stopped. */
  state: "creating" | "ready" | "notready";
  /** Nanoseconds since the epoch. */
  createdAt: bigint;
  /** The pause process (0 once stopped). Containers join its namespaces through /proc/<pid>/ns/*. */
  pid: number;
  /** The pod's network namespace path ("" for host network or once stopped). */
  netns: string;
  /** Pod IPs, the first is the primary. */
  ips: string[];
  /** Network, PID and IPC modes (NamespaceMode). */
  namespaces: { network: number; pid: number; ipc: number };
  /** The cgroup parent from the pod's Linux config ("" = none). */
  cgroupParent: string;
  /** Files the pod's containers mount: `<root>/sandboxes/<id>/{hostname,hosts,resolv.conf}` and the pod's /dev/shm. */
  hostnamePath: string;
  hostsPath: string;
  resolvPath: string;
  /** The pod's /dev/shm (a tmpfs under the CRI state dir, or /dev/shm with host IPC). */
  shmPath: string;
  /** Log directory from the config ("" = none). */
  logDirectory: string;
}

/** A container as the CRI process records it (LMDB, `store.containers`); the containers part adds what it needs. */
export interface ContainerRecord {
  id: string;
  podId: string;
  /** containerd's CRI name: `<name>_<pod name>_<pod namespace>_<pod uid>_<attempt>` (unique among containers). */
  name: string;
  config: ContainerConfig;
  /** Nanoseconds since the epoch. */
  createdAt: bigint;
  [more: string]: unknown;
}

type Key = (string | number)[];
type DB = RootDatabase<unknown, Key>;

/** One kind of record, by id, with its unique name. */
export class RecordTable<T extends { id: string; name: string }> {
  constructor(
    private readonly db: DB,
    private readonly kind: "pod" | "ctr",
    private readonly what: string,
  ) {}

  find(id: string): T | undefined {
    return this.db.get([this.kind, id]) as T | undefined;
  }

  /** The record of `id`, or of the one id `id` is a prefix of (crictl passes short ids); NotFound otherwise. */
  get(id: string): T {
    const exact = this.find(id);
    if (exact) return exact;
    if (id) {
      const hits: T[] = [];
      for (const { value } of scanPrefix<T>(this.db, [this.kind])) {
        if (value.id.startsWith(id)) hits.push(value);
        if (hits.length > 1) throw errInvalidArgument(`${this.what} id prefix ${JSON.stringify(id)} is ambiguous`);
      }
      if (hits[0]) return hits[0];
    }
    throw errNotFound(`an error occurred when try to find ${this.what} ${JSON.stringify(id)}: not found`);
  }

  list(): T[] {
    return [...scanPrefix<T>(this.db, [this.kind])].map((e) => e.value);
  }

  /** The id holding `name`, if any. */
  byName(name: string): string | undefined {
    return this.db.get(["name", this.kind, name]) as string | undefined;
  }

  /** Write a new record, reserving its name (AlreadyExists when another record holds it). */
  add(rec: T): Promise<void> {
    return writeTxn(this.db, () => {
      const holder = this.db.get(["name", this.kind, rec.name]) as string | undefined;
      if (holder !== undefined && holder !== rec.id) {
        throw errAlreadyExists(`failed to reserve ${this.what} name ${JSON.stringify(rec.name)}: name ${JSON.stringify(rec.name)} is reserved for ${JSON.stringify(holder)}`);
      }
      if (this.db.get([this.kind, rec.id]) !== undefined) throw errAlreadyExists(`${this.what} ${JSON.stringify(rec.id)} already exists`);
      void this.db.put(["name", this.kind, rec.name], rec.id);
      void this.db.put([this.kind, rec.id], rec);
    });
  }

  /** Replace an existing record (its name stays reserved). */
  put(rec: T): Promise<void> {
    return writeTxn(this.db, () => {
      void this.db.put([this.kind, rec.id], rec);
    });
  }

  /** Change an existing record in one transaction; NotFound when it is gone. */
  update(id: string, fn: (rec: T) => void): Promise<T> {
    return writeTxn(this.db, () => {
      const rec = this.db.get([this.kind, id]) as T | undefined;
      if (!rec) throw errNotFound(`${this.what} ${JSON.stringify(id)} not found`);
      fn(rec);
      void this.db.put([this.kind, id], rec);
      return rec;
    });
  }

  /** Remove a record and release its name; nothing when it is gone. */
  delete(id: string): Promise<void> {
    return writeTxn(this.db, () => {
      const rec = this.db.get([this.kind, id]) as T | undefined;
      if (!rec) return;
      if (this.db.get(["name", this.kind, rec.name]) === id) void this.db.remove(["name", this.kind, rec.name]);
      void this.db.remove([this.kind, id]);
    });
  }
}

export class CriStore {
  readonly pods: RecordTable<PodRecord>;
  readonly containers: RecordTable<ContainerRecord>;

  private constructor(private readonly db: DB) {
    this.pods = new RecordTable<PodRecord>(db, "pod", "sandbox");
    this.containers = new RecordTable<ContainerRecord>(db, "ctr", "container");
  }

  static open(dir: string): CriStore {
    return new CriStore(openServiceDB<Key>(dir));
  }

  async close(): Promise<void> {
    await this.db.close();
  }
}
