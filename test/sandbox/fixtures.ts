/** Fixtures for the sandbox tests: the local store on a temp root, and the sandbox gRPC services on a temp socket. */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import type { CallContext } from "#libs/context";
import type { EventPublisher, Envelope } from "#libs/events";
import type { AnyMsg } from "#libs/proto";
import { createLogger } from "#libs/log";
import { RpcServer } from "#libs/grpc/server";
import { SandboxStoreProxy } from "#libs/clients/sandbox";
import type { SandboxController } from "#libs/core/sandbox";
import { openSandboxDB, type SandboxDB } from "#services/sandbox/src/local/db";
import { LocalSandboxStore } from "#services/sandbox/src/local/store";
import { ControllerRegistry } from "#services/sandbox/src/local/controllers";
import { SANDBOX_STORE_SERVICE, storeHandlers } from "#services/sandbox/src/server/store";
import { SANDBOX_CONTROLLER_SERVICE, controllerHandlers } from "#services/sandbox/src/server/controller";
import type { StoreFixture } from "./store-suite";
import { testChannels } from "../harness";

export interface RecordedEvent {
  topic: string;
  namespace: string;
  type: string;
  body: Record<string, unknown>;
}

export class RecordingPublisher implements EventPublisher {
  readonly events: RecordedEvent[] = [];
  async publish(ctx: CallContext, topic: string, type: string, event: Record<string, unknown>): Promise<void> {
    this.events.push({ topic, namespace: ctx.namespace ?? "", type, body: event });
  }
  async publishAny(ctx: CallContext, topic: string, event: AnyMsg): Promise<void> {
    this.events.push({ topic, namespace: ctx.namespace ?? "", type: event.type_url, body: {} });
  }
  async forward(_ctx: CallContext, env: Envelope): Promise<void> {
    this.events.push({ topic: env.topic, namespace: env.namespace, type: env.event.type_url, body: {} });
  }
}

export interface LocalStore {
  dir: string;
  db: SandboxDB;
  store: LocalSandboxStore;
  ensured: string[];
  close(): Promise<void>;
}

export function openLocal(dir = fs.mkdtempSync(path.join(os.tmpdir(), "flotilla-sandbox-"))): LocalStore {
  const db = openSandboxDB(dir);
  const ensured: string[] = [];
  const store = new LocalSandboxStore({ db, ensureNamespace: async (_ctx, ns) => void ensured.push(ns) });
  return { dir, db, store, ensured, close: async () => void (await db.close()) };
}

export async function localStoreFixture(): Promise<StoreFixture> {
  const l = openLocal();
  return {
    store: l.store,
    ensured: () => l.ensured,
    cleanup: async () => {
      await l.close();
      fs.rmSync(l.dir, { recursive: true, force: true });
    },
  };
}

export interface ServedSandbox {
  address: string;
  local: LocalStore;
  events: RecordingPublisher;
  close(): Promise<void>;
}

/** The Store and Controller gRPC services (with the given controllers) on a temp unix socket. */
export async function serveSandbox(controllers: Record<string, SandboxController> = {}): Promise<ServedSandbox> {
  const local = openLocal();
  const events = new RecordingPublisher();
  const server = new RpcServer({ service: "sandbox", log: createLogger("sandbox-test", "silent") });
  server.addService(SANDBOX_STORE_SERVICE, storeHandlers(local.store));
  server.addService(SANDBOX_CONTROLLER_SERVICE, controllerHandlers(new ControllerRegistry(controllers, events)));
  const address = `unix://${path.join(local.dir, "sandbox.sock")}`;
  await server.listen(address);
  return {
    address,
    local,
    events,
    close: async () => {
      await server.shutdown(1000);
      await local.close();
      fs.rmSync(local.dir, { recursive: true, force: true });
    },
  };
}

export async function proxyStoreFixture(): Promise<StoreFixture> {
  const s = await serveSandbox();
  return { store: new SandboxStoreProxy(testChannels.get(s.address)), ensured: () => s.local.ensured, cleanup: () => s.close() };
}
