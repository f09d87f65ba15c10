/**
 * The local ImageStore, kept in the images process's LMDB database, with containerd's semantics
 * (metadata/images.go): validation, field masks, timestamps stamped by the store, events recorded in the change's transaction,
 * and a garbage collection pass after deletions (awaited with `sync`).
 */
import { isDigestedName, writeTxn } from "#libs/lmdb";
import { namespaceRequired, type CallContext } from "#libs/context";
import { errAlreadyExists, errInvalidArgument, errNotFound } from "#libs/errdefs";
import { compactLabels, validateLabels } from "#libs/fieldmask";
import { parseAll } from "#libs/filters";
import type { EventRecorder } from "#libs/events";
import { digestProblem, IMAGE_EVENTS, type Descriptor, type Image, type ImageDeleteOptions, type ImageInput, type ImageStore } from "#libs/core/images";
import type { GCScheduler } from "#libs/core/gc";
import { imageAdaptor } from "./adaptors";
import { scanPrefix, type MetaDB } from "./db";
import { imageKey, readImage, storedImage, toImage, type StoredImage } from "../../public";
import { ensureNamespaceInTxn } from "./namespaces";
import { laterThan, storedTime } from "#libs/time";

/** The record to store: with its name when the key holds the name's digest. */
const withName = (name: string, s: StoredImage): StoredImage => (isDigestedName(name) ? { ...s, name } : s);
/** An entry of a scan as an image (its name from the record when the key holds a digest). */
const entryImage = (key: (string | number)[], s: StoredImage): Image => toImage(s.name ?? String(key[2]), s);

function cleanTarget(t: Descriptor | undefined): StoredImage["target"] {
  return { mediaType: t?.mediaType ?? "", digest: t?.digest ?? "", size: Number(t?.size ?? 0), annotations: compactLabels(t?.annotations) };
}

/** containerd's validateImage. */
function validate(name: string, labels: Record<string, string>, target: StoredImage["target"]): void {
  if (!name) throw errInvalidArgument("image name must not be empty");
  const bad = validateLabels(labels);
  if (bad) throw errInvalidArgument(`image.Labels: ${bad}`);
  const p = digestProblem(target.digest);
  if (p) throw errInvalidArgument(`Target.Digest ${JSON.stringify(target.digest)} invalid: ${p}`);
  if (!(target.size > 0)) throw errInvalidArgument("Target.Size must be greater than zero");
  if (!target.mediaType) throw errInvalidArgument("Target.MediaType must be set");
}

export class LocalImageStore implements ImageStore {
  constructor(
    private readonly db: MetaDB,
    private readonly events: EventRecorder,
    private readonly gc?: Pick<GCScheduler, "markDirty" | "markMutation" | "scheduleAndWait">,
  ) {}

  async get(ctx: CallContext, name: string): Promise<Image> {
    const ns = namespaceRequired(ctx);
    const img = readImage(this.db, ns, name);
    if (!img) throw errNotFound(`image ${JSON.stringify(name)}`);
    return img;
  }

  async list(ctx: CallContext, filters?: readonly string[]): Promise<Image[]> {
    const ns = namespaceRequired(ctx);
    const f = parseAll(filters);
    const out: Image[] = [];
    for (const { key, value } of scanPrefix<StoredImage>(this.db, ["img", ns])) {
      const img = entryImage(key, value);
      if (f.match(imageAdaptor(img))) out.push(img);
    }
    return out;
  }

  async create(ctx: CallContext, image: ImageInput): Promise<Image> {
    const ns = namespaceRequired(ctx);
    const labels = compactLabels(image.labels);
    const target = cleanTarget(image.target);
    validate(image.name, labels, target);
    const now = storedTime();
    const stored: StoredImage = { labels, target, created: now, updated: now };
    const created = await writeTxn(this.db, () => {
      if (this.db.get(imageKey(ns, image.name)) !== undefined) return false;
      ensureNamespaceInTxn(this.db, ns);
      void this.db.put(imageKey(ns, image.name), withName(image.name, stored));
      this.events.record(this.db, ctx, IMAGE_EVENTS.create.topic, IMAGE_EVENTS.create.type, { name: image.name, labels });
      return true;
    });
    if (!created) throw errAlreadyExists(`image ${JSON.stringify(image.name)}`);
    this.gc?.markMutation(ns);
    return toImage(image.name, stored);
  }

  async update(ctx: CallContext, image: ImageInput, paths: readonly string[] = []): Promise<Image> {
    const ns = namespaceRequired(ctx);
    if (!image.name) throw errInvalidArgument("image name is required for update");
    const incoming = { labels: image.labels ?? {}, target: cleanTarget(image.target) };
    const res = await writeTxn(this.db, () => {
      const cur = storedImage(this.db, ns, image.name);
      if (!cur) return { missing: true as const };
      let labels = { ...cur.labels };
      let target = { ...cur.target, annotations: { ...cur.target.annotations } };
      if (paths.length) {
        for (const p of paths) {
          if (p.startsWith("labels.")) {
            const k = p.slice("labels.".length);
            labels[k] = incoming.labels[k] ?? "";
          } else if (p.startsWith("annotations.")) {
            const k = p.slice("annotations.".length);
            target.annotations[k] = image.target?.annotations?.[k] ?? "";
          } else if (p === "labels") {
            labels = { ...incoming.labels };
          } else if (p === "target") {
            target = incoming.target;
          } else if (p === "annotations") {
            target.annotations = { ...(image.target?.annotations ?? {}) };
          } else {
            return { bad: `cannot update ${JSON.stringify(p)} field on image ${JSON.stringify(image.name)}` };
          }
        }
      } else {
        labels = { ...incoming.labels };
        target = incoming.target;
      }
      labels = compactLabels(labels);
      target.annotations = compactLabels(target.annotations);
      try {
        validate(image.name, labels, target);
      } catch (e) {
        return { invalid: e };
      }
      const next: StoredImage = { labels, target, created: cur.created, updated: laterThan(cur.updated) };
      void this.db.put(imageKey(ns, image.name), withName(image.name, next));
      this.events.record(this.db, ctx, IMAGE_EVENTS.update.topic, IMAGE_EVENTS.update.type, { name: image.name, labels });
      return { next };
    });
    if ("missing" in res) throw errNotFound(`image ${JSON.stringify(image.name)}`);
    if ("bad" in res) throw errInvalidArgument(res.bad);
    if ("invalid" in res) throw res.invalid;
    this.gc?.markMutation(ns);
    return toImage(image.name, res.next);
  }

  async delete(ctx: CallContext, name: string, opts: ImageDeleteOptions = {}): Promise<void> {
    const ns = namespaceRequired(ctx);
    const res = await writeTxn(this.db, () => {
      const cur = storedImage(this.db, ns, name);
      if (!cur) return "missing" as const;
      if (opts.target?.digest && cur.target.digest !== opts.target.digest) return { other: cur.target.digest };
      void this.db.remove(imageKey(ns, name));
      this.events.record(this.db, ctx, IMAGE_EVENTS.delete.topic, IMAGE_EVENTS.delete.type, { name });
      return "deleted" as const;
    });
    if (res === "missing") throw errNotFound(`image ${JSON.stringify(name)}`);
    if (typeof res === "object") throw errNotFound(`image ${JSON.stringify(name)} has target ${res.other}, not ${opts.target!.digest}`);
    this.gc?.markDirty(ns);
    if (opts.sync && this.gc) await this.gc.scheduleAndWait(ctx, "images");
  }

  /** Every image of a namespace (for garbage collection). */
  namespaceImages(ns: string): Image[] {
    const out: Image[] = [];
    for (const { key, value } of scanPrefix<StoredImage>(this.db, ["img", ns])) out.push(entryImage(key, value));
    return out;
  }

  /** True when the namespace holds any image (namespace deletion). */
  hasImages(ns: string): boolean {
    for (const _ of scanPrefix(this.db, ["img", ns])) return true;
    return false;
  }
}
