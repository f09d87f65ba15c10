/**
 * Progress for one transfer: per-descriptor jobs named by their content ref key, with parents, sent
 * as containerd's Progress events ("waiting", a byte-count state such as "downloading", "complete",
 * "already exists", ...). Byte updates are throttled per job.
 */
import type { Descriptor, ProgressEvent, ProgressFn } from "#libs/core/transfer";
import { refKey, type OciDescriptor } from "#libs/oci";

export const BYTES_INTERVAL_MS = 200;

interface Job {
  name: string;
  parents: string[];
  desc: Descriptor;
  last: number;
  lastSent: number;
  done: boolean;
}

export function toDescriptor(d: OciDescriptor): Descriptor {
  return { mediaType: d.mediaType, digest: d.digest, size: d.size, ...(d.annotations ? { annotations: d.annotations } : {}) };
}

export class ProgressTracker {
  private readonly jobs = new Map<string, Job>();

  constructor(private readonly fn: ProgressFn | undefined, private readonly root: string, private readonly bytesState = "downloading") {}

  emit(p: ProgressEvent): void {
    if (!this.fn) return;
    try {
      this.fn(p);
    } catch {
      /* a broken progress stream never fails the transfer */
    }
  }

  /** Track `desc` under `parents` (ref keys); sends "waiting" the first time. */
  add(desc: OciDescriptor, parents: string[]): string {
    const name = refKey(desc);
    if (this.jobs.has(name)) return name;
    const job: Job = { name, parents: parents.length ? parents : [this.root], desc: toDescriptor(desc), last: 0, lastSent: 0, done: false };
    this.jobs.set(name, job);
    this.emit({ event: "waiting", name, parents: job.parents, progress: 0, total: desc.size, desc: job.desc });
    return name;
  }

  bytes(desc: OciDescriptor, offset: number, force = false): void {
    const job = this.jobs.get(refKey(desc));
    if (!job || job.done || offset <= job.last) return;
    job.last = offset;
    const now = Date.now();
    if (!force && now - job.lastSent < BYTES_INTERVAL_MS) return;
    job.lastSent = now;
    this.emit({ event: this.bytesState, name: job.name, parents: job.parents, progress: offset, total: desc.size, desc: job.desc });
  }

  private finish(desc: OciDescriptor, event: string): void {
    const job = this.jobs.get(refKey(desc));
    if (!job || job.done) return;
    job.done = true;
    job.last = desc.size;
    this.emit({ event, name: job.name, parents: job.parents, progress: desc.size, total: desc.size, desc: job.desc });
  }

  complete(desc: OciDescriptor, event = "complete"): void {
    this.finish(desc, event);
  }

  exists(desc: OciDescriptor): void {
    this.finish(desc, "already exists");
  }

  /** A state change of a job that stays open (e.g. "extracting"). */
  state(desc: OciDescriptor, event: string): void {
    const name = refKey(desc);
    const job = this.jobs.get(name);
    this.emit({ event, name, parents: job?.parents ?? [this.root], progress: desc.size, total: desc.size, desc: toDescriptor(desc) });
  }
}
