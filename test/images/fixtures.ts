/**
 * Fixtures for the images tests: the local image store and lease manager on a temp LMDB, the same behind
 * a real gRPC server (used through the proxies), in-memory lease resource holders, a recording event
 * publisher and a counting GC scheduler.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { namespaceRequired, type CallContext } from "#libs/context";
import type { EventRecorder, Envelope } from "#libs/events";
import type { AnyMsg } from "#libs/proto";
import { createLogger } from "#libs/log";
import { RpcServer } from "#libs/grpc/server";
import { ImageStoreProxy } from "#libs/clients/images";
import { LeaseManagerProxy, LeaseResourceHolderProxy } from "#libs/clients/leases";
import type { GCScheduler, GCStats } from "#libs/core/gc";
import type { LeaseResource, LeaseResourceHolder } from "#libs/core/leases";
import { openMetaDB, type MetaDB } from "#services/images/src/local/db";
import { LocalImageStore } from "#services/images/src/local/images";
import { LocalLeaseManager } from "#services/images/src/local/leases";
import { MarkGate } from "#services/images/src/local/gc/gate";
import { IMAGES_SERVICE, imagesHandlers } from "#services/images/src/server/images";
import { LEASES_SERVICE, leasesHandlers } from "#services/images/src/server/leases";
import { leaseHolderHandlers } from "#libs/leaseholder";
import type { ImageSuiteFixture } from "./suite";
import type { LeaseSuiteFixture } from "./lease-suite";
import { testChannels } from "../harness";

export interface RecordedEvent {
  topic: string;
  namespace: string;
  body: Record<string, unknown>;
}

export class RecordingPublisher implements EventRecorder {
  /** In a transaction of the store's: recorded at once (what the outbox would publish on its commit). */
  record(_db: unknown, ctx: CallContext, topic: string, type: string, event: Record<string, unknown>): void {
    void this.publish(ctx, topic, type, event);
  }
  readonly events: RecordedEvent[] = [];
  async publish(ctx: CallContext, topic: string, _type: string, event: Record<string, unknown>): Promise<void> {
    this.events.push({ topic, namespace: namespaceRequired(ctx), body: event });
  }
  async publishAny(ctx: CallContext, topic: string, _event: AnyMsg): Promise<void> {
    this.events.push({ topic, namespace: namespaceRequired(ctx), body: {} });
  }
  async forward(_ctx: CallContext, env: Envelope): Promise<void> {
    this.events.push({ topic: env.topic, namespace: env.namespace, body: {} });
  }
}

export class CountingGC implements GCScheduler {
  dirty = 0;
  mutations = 0;
  waits = 0;
  readonly dirtyNamespaces: (string | undefined)[] = [];
  markDirty(ns?: string): void {
    this.dirty++;
    this.dirtyNamespaces.push(ns);
  }
  markMutation(): void {
    this.mutations++;
  }
  async scheduleAndWait(): Promise<GCStats> {
    this.waits++;
    return { pass: this.waits, startedAt: new Date(), elapsedMs: 0, freed: { content: 0, snapshots: 0, ingests: 0, leases: 0 }, skipped: [] };
  }
}

/** An in-memory LeaseResourceHolder (what the content or snapshots process keeps), per namespace. */
export class MemoryHolder implements LeaseResourceHolder {
  readonly records = new Map<string, Map<string, LeaseResource>>();
  deletedLeases: string[] = [];
  down = false;
  private k(ctx: CallContext, lease: string): string {
    return `${namespaceRequired(ctx)}\0${lease}`;
  }
  private check(): void {
    if (this.down) throw Object.assign(new Error("holder down: unavailable"), { code: "unavailable" });
  }
  async addResource(ctx: CallContext, lease: string, r: LeaseResource): Promise<void> {
    this.check();
    const k = this.k(ctx, lease);
    if (!this.records.has(k)) this.records.set(k, new Map());
    this.records.get(k)!.set(`${r.type}\0${r.id}`, { type: r.type, id: r.id });
  }
  async deleteResource(ctx: CallContext, lease: string, r: LeaseResource): Promise<void> {
    this.check();
    this.records.get(this.k(ctx, lease))?.delete(`${r.type}\0${r.id}`);
  }
  async listResources(ctx: CallContext, lease: string): Promise<LeaseResource[]> {
    this.check();
    return [...(this.records.get(this.k(ctx, lease))?.values() ?? [])];
  }
  async deleteLease(ctx: CallContext, lease: string): Promise<void> {
    this.check();
    this.deletedLeases.push(lease);
    this.records.delete(this.k(ctx, lease));
  }
}

export function tempDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

export interface LocalMeta {
  dir: string;
  db: MetaDB;
  events: RecordingPublisher;
  gc: CountingGC;
  images: LocalImageStore;
  leases: LocalLeaseManager;
  content: MemoryHolder;
  snapshots: MemoryHolder;
  gate: MarkGate;
  close(): Promise<void>;
}

export function openLocalMeta(): LocalMeta {
  const dir = tempDir("flotilla-images-");
  const db = openMetaDB(dir);
  const events = new RecordingPublisher();
  const gc = new CountingGC();
  const content = new MemoryHolder();
  const snapshots = new MemoryHolder();
  const gate = new MarkGate();
  const images = new LocalImageStore(db, events, gc);
  const leases = new LocalLeaseManager({ db, holders: { content, snapshots }, gc, gate });
  return {
    dir, db, events, gc, images, leases, content, snapshots, gate,
    close: async () => {
      await db.close();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

export async function localImagesFixture(): Promise<ImageSuiteFixture> {
  const m = openLocalMeta();
  return { store: m.images, events: () => m.events.events, gcCalls: () => ({ dirty: m.gc.dirty, waits: m.gc.waits }), cleanup: m.close };
}

export async function localLeasesFixture(): Promise<LeaseSuiteFixture> {
  const m = openLocalMeta();
  return { leases: m.leases, content: m.content, snapshots: m.snapshots, gcCalls: () => ({ dirty: m.gc.dirty, waits: m.gc.waits }), cleanup: m.close };
}

/**
 * The images process's stores behind a real RpcServer on a temp unix socket, used through the proxies;
 * the lease holders are in-memory, each behind its own server and reached through LeaseResourceHolderProxy.
 */
async function proxyMeta(): Promise<{ m: LocalMeta; images: ImageStoreProxy; leases: LeaseManagerProxy; content: MemoryHolder; snapshots: MemoryHolder; stop(): Promise<void> }> {
  const dir = tempDir("flotilla-images-proxy-");
  const log = createLogger("images-test", "silent");
  const content = new MemoryHolder();
  const snapshots = new MemoryHolder();
  const servers: RpcServer[] = [];
  const serve = async (name: string, add: (s: RpcServer) => void): Promise<string> => {
    const s = new RpcServer({ service: name, log });
    add(s);
    const addr = `unix://${path.join(dir, `${name}.sock`)}`;
    await s.listen(addr);
    servers.push(s);
    return addr;
  };
  const contentAddr = await serve("content", (s) => s.addService(LEASES_SERVICE, leaseHolderHandlers(content)));
  const snapshotsAddr = await serve("snapshots", (s) => s.addService(LEASES_SERVICE, leaseHolderHandlers(snapshots)));
  const db = openMetaDB(dir);
  const events = new RecordingPublisher();
  const gc = new CountingGC();
  const gate = new MarkGate();
  const localImages = new LocalImageStore(db, events, gc);
  const localLeases = new LocalLeaseManager({ db, holders: { content: new LeaseResourceHolderProxy(testChannels.get(contentAddr)), snapshots: new LeaseResourceHolderProxy(testChannels.get(snapshotsAddr)) }, gc, gate });
  const addr = await serve("images", (s) => {
    s.addService(IMAGES_SERVICE, imagesHandlers(localImages));
    s.addService(LEASES_SERVICE, leasesHandlers(localLeases));
  });
  const m: LocalMeta = { dir, db, events, gc, images: localImages, leases: localLeases, content, snapshots, gate, close: async () => undefined };
  return {
    m,
    images: new ImageStoreProxy(testChannels.get(addr)),
    leases: new LeaseManagerProxy(testChannels.get(addr)),
    content,
    snapshots,
    stop: async () => {
      for (const s of servers) await s.shutdown(1000);
      await db.close();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

export async function proxyImagesFixture(): Promise<ImageSuiteFixture> {
  const p = await proxyMeta();
  return { store: p.images, events: () => p.m.events.events, gcCalls: () => ({ dirty: p.m.gc.dirty, waits: p.m.gc.waits }), cleanup: p.stop };
}

export async function proxyLeasesFixture(): Promise<LeaseSuiteFixture> {
  const p = await proxyMeta();
  return { leases: p.leases, content: p.content, snapshots: p.snapshots, gcCalls: () => ({ dirty: p.m.gc.dirty, waits: p.m.gc.waits }), cleanup: p.stop };
}
