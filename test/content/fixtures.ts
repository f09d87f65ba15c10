/** Fixtures for the content tests: a local store on a temp root, and the same store behind a real gRPC server. */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import type { CallContext } from "#libs/context";
import type { EventRecorder, Envelope } from "#libs/events";
import type { AnyMsg } from "#libs/proto";
import { createLogger } from "#libs/log";
import { RpcServer } from "#libs/grpc/server";
import { ContentStoreProxy, type ContentProxyOptions } from "#libs/clients/content";
import { LeaseResourceHolderProxy } from "#libs/clients/leases";
import { openContentDB, type ContentDB } from "#services/content/src/local/db";
import { LocalLeaseResources } from "#services/content/src/local/leases";
import { LocalContentStore } from "#services/content/src/local/store";
import { registerContentService } from "#services/content/src/server/content";
import { LEASES_SERVICE, leaseHolderHandlers } from "#libs/leaseholder";
import type { SuiteFixture } from "./suite";
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
    this.events.push({ topic, namespace: ctx.namespace ?? "", body: event });
  }
  async publishAny(ctx: CallContext, topic: string, _event: AnyMsg): Promise<void> {
    this.events.push({ topic, namespace: ctx.namespace ?? "", body: {} });
  }
  async forward(_ctx: CallContext, env: Envelope): Promise<void> {
    this.events.push({ topic: env.topic, namespace: env.namespace, body: {} });
  }
}

export interface LocalFixture {
  root: string;
  db: ContentDB;
  store: LocalContentStore;
  events: RecordingPublisher;
  ensured: string[];
  close(): Promise<void>;
}

export async function openLocal(root?: string): Promise<LocalFixture> {
  const dir = root ?? fs.mkdtempSync(path.join(os.tmpdir(), "flotilla-content-"));
  const db = openContentDB(dir);
  const events = new RecordingPublisher();
  const ensured: string[] = [];
  const store = await LocalContentStore.open({ root: dir, db, events, ensureNamespace: async (_ctx, ns) => void ensured.push(ns) });
  return { root: dir, db, store, events, ensured, close: async () => void (await db.close()) };
}

export async function localFixture(): Promise<SuiteFixture> {
  const l = await openLocal();
  return {
    store: l.store,
    leases: new LocalLeaseResources(l.db),
    events: () => l.events.events,
    cleanup: async () => {
      await l.close();
      fs.rmSync(l.root, { recursive: true, force: true });
    },
  };
}

/** The local store served by a real RpcServer on a temp unix socket, used through ContentStoreProxy. */
export async function proxyFixture(opts: ContentProxyOptions = {}): Promise<SuiteFixture> {
  const l = await openLocal();
  const server = new RpcServer({ service: "content", log: createLogger("content-test", "silent") });
  registerContentService(server, l.store);
  server.addService(LEASES_SERVICE, leaseHolderHandlers(new LocalLeaseResources(l.db)));
  const sock = path.join(l.root, "content.sock");
  await server.listen(`unix://${sock}`);
  return {
    store: new ContentStoreProxy(testChannels.get(`unix://${sock}`), opts),
    leases: new LeaseResourceHolderProxy(testChannels.get(`unix://${sock}`)),
    events: () => l.events.events,
    cleanup: async () => {
      testChannels.close();
      await server.shutdown(1000);
      await l.close();
      fs.rmSync(l.root, { recursive: true, force: true });
    },
  };
}
