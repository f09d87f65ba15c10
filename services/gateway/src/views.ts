/**
 * Lookups the gateway answers itself, from read-only views of the databases of the processes that own
 * them, when they run on this host: Content.Info, Containers.Get, Images.Get, Namespaces.Get, and
 * Snapshots.Stat and Mounts (from the snapshot's record and the layout its snapshotter published). A client
 * such as `ctr run IMAGE` makes a few dozen of these per command and each would otherwise cross a
 * second process.
 *
 * The owner stays the only writer and the judge. A view reads the latest committed snapshot of the
 * owner's database (LMDB readers in other processes see a commit as soon as it is made, and an owner
 * acknowledges a write only after its commit), so what it finds is what the owner would find. It
 * answers only with a record it finds, though: anything else (not found, a request it does not
 * understand, a database not there yet) is forwarded to the owner, whose errors stay its own. The
 * answer is built by the owner's own code (the `...FromView` decoders of the module each owner
 * publishes, `services/<owner>/public`, which the owner uses too), so it is the same message the owner
 * would have sent. A view answers only while the database records the SCHEMA_VERSION of the module
 * this gateway was built with: an owner running another version is asked instead.
 */
import type { RootDatabase } from "lmdb";
import type { Type } from "protobufjs";
import { type Msg, encodeFrame } from "#libs/grpc/server";
import { ReadView } from "#libs/lmdb";
import { DECODE_OPTIONS, lookupService, validateWire } from "#libs/proto";
import * as content from "#services/content/public";
import * as images from "#services/images/public";
import * as snapshots from "#services/snapshots/public";
import * as tasks from "#services/tasks/public";

/** The roots of the owners whose databases are viewed (an owner left out is always asked). */
export interface ViewRoots {
  content?: string;
  images?: string;
  snapshots?: string;
  tasks?: string;
}

type AnyDB = RootDatabase<unknown, (string | number)[]>;

/** What an owner's public module gives a view: the schema version it reads, and its read-only open. */
interface Published<DB extends AnyDB> {
  SCHEMA_VERSION: number;
  openReadOnly(dir: string): DB;
}

/** A view of an owner's database under `root`, read only while it records `p`'s schema version. */
const viewOf = <DB extends AnyDB>(p: Published<DB>, root: string): ReadView<DB> => new ReadView(() => p.openReadOnly(root), undefined, p.SCHEMA_VERSION);

/** A read-only view of the content process's database under `root`. */
export const contentView = (root: string): ReadView<content.ContentDB> => viewOf(content, root);

/** Whether a namespace holds a blob, by a view of the content database (for content-reads). */
export const blobHolds = (view: ReadView<content.ContentDB>) => (ns: string, digest: string): boolean | undefined =>
  view.read((db) => db.get(content.blobKey(ns, digest)) !== undefined);

interface ViewMethod {
  req: Type;
  res: Type;
  /** The call needs a namespace (without one it goes to the owner, which says why). */
  namespaced: boolean;
  answer(ns: string, req: Msg): Msg | undefined;
}

export class ReadViews {
  private readonly methods = new Map<string, ViewMethod>();
  private readonly views: { close(): void }[] = [];

  /** `contentDB`: a view of the content database to use (shared with content-reads), else one is made. */
  constructor(roots: ViewRoots, contentDB?: ReadView<content.ContentDB>) {
    const c = contentDB ?? (roots.content !== undefined ? contentView(roots.content) : undefined);
    if (c) this.views.push(c);
    const img = this.view(roots.images, images);
    const ctr = this.view(roots.tasks, tasks);
    const snap = this.view(roots.snapshots, snapshots);
    this.serve(c, "containerd.services.content.v1.Content", "Info", true, content.infoFromView);
    this.serve(img, "containerd.services.images.v1.Images", "Get", true, images.imageFromView);
    this.serve(img, "containerd.services.namespaces.v1.Namespaces", "Get", false, images.namespaceFromView);
    this.serve(ctr, "containerd.services.containers.v1.Containers", "Get", true, tasks.containerFromView);
    this.serve(snap, "containerd.services.snapshots.v1.Snapshots", "Stat", true, snapshots.statFromView);
    this.serve(snap, "containerd.services.snapshots.v1.Snapshots", "Mounts", true, snapshots.mountsFromView);
  }

  /** A view of the database under `dir`, or none when that owner is not viewed. */
  private view<DB extends AnyDB>(dir: string | undefined, p: Published<DB>): ReadView<DB> | undefined {
    if (dir === undefined) return undefined;
    const v = viewOf(p, dir);
    this.views.push(v);
    return v;
  }

  /** Answer `service/method` with `fromView` over `view` (nothing is registered without a view). */
  private serve<DB extends AnyDB>(
    view: ReadView<DB> | undefined,
    service: string,
    method: string,
    namespaced: boolean,
    fromView: (db: DB, ns: string, req: Msg) => Msg | undefined,
  ): void {
    if (!view) return;
    const m = lookupService(service).methods[method]!;
    m.resolve();
    const answer = (ns: string, req: Msg): Msg | undefined => view.read((db) => fromView(db, ns, req));
    this.methods.set(`/${service}/${method}`, { req: m.resolvedRequestType!, res: m.resolvedResponseType!, namespaced, answer });
  }

  /** True when calls of this path may be answered here. */
  has(methodPath: string): boolean {
    return this.methods.has(methodPath);
  }

  /**
   * The response frame for `body` (the request as one length-prefixed gRPC frame), or undefined when the
   * owner must answer.
   */
  answer(methodPath: string, namespace: string | undefined, body: Buffer): Buffer | undefined {
    const m = this.methods.get(methodPath);
    if (!m || (m.namespaced && !namespace)) return undefined;
    if (body.length < 5 || body[0] !== 0 || body.readUInt32BE(1) !== body.length - 5) return undefined;
    try {
      const msg = body.subarray(5);
      validateWire(m.req, msg);
      const out = m.answer(namespace ?? "", m.req.toObject(m.req.decode(msg), DECODE_OPTIONS));
      return out && encodeFrame(m.res, out);
    } catch {
      return undefined;
    }
  }

  close(): void {
    for (const v of this.views) v.close();
  }
}
