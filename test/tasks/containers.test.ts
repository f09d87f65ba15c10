/** The ContainerStore suite against the local LMDB store and through the gRPC proxy on a real server. */
import { after } from "node:test";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { RpcServer } from "#libs/grpc/server";
import { createLogger } from "#libs/log";
import { unpackAny, type AnyMsg } from "#libs/proto";
import type { CallContext } from "#libs/context";
import type { Envelope, EventRecorder } from "#libs/events";
import { ContainerStoreProxy } from "#libs/clients/containers";
import { LocalContainerStore, openTasksDB } from "#services/tasks/src/local/containers";
import { CONTAINERS_SERVICE, containersHandlers } from "#services/tasks/src/server/containers";
import { containersSuite, type RecordedEvent, type SuiteFixture } from "./containers-suite";
import { testChannels } from "../harness";

class Recorder implements EventRecorder {
  /** In a transaction of the store's: recorded at once (what the outbox would publish on its commit). */
  record(_db: unknown, ctx: CallContext, topic: string, type: string, event: Record<string, unknown>): void {
    void this.publish(ctx, topic, type, event);
  }
  readonly events: RecordedEvent[] = [];
  async publish(ctx: CallContext, topic: string, _type: string, event: Record<string, unknown>): Promise<void> {
    this.events.push({ topic, namespace: ctx.namespace ?? "", event: JSON.parse(JSON.stringify(event)) as Record<string, unknown> });
  }
  async publishAny(ctx: CallContext, topic: string, event: AnyMsg): Promise<void> {
    this.events.push({ topic, namespace: ctx.namespace ?? "", event: unpackAny(event) });
  }
  async forward(_ctx: CallContext, env: Envelope): Promise<void> {
    this.events.push({ topic: env.topic, namespace: env.namespace, event: unpackAny(env.event) });
  }
}

function local(): { dir: string; store: LocalContainerStore; events: Recorder; db: ReturnType<typeof openTasksDB> } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "flt-containers-"));
  const db = openTasksDB(dir);
  const events = new Recorder();
  return { dir, db, events, store: new LocalContainerStore(db, events) };
}

containersSuite("local LMDB store", async (): Promise<SuiteFixture> => {
  const l = local();
  return {
    store: l.store,
    events: l.events.events,
    cleanup: async () => {
      await l.db.close();
      fs.rmSync(l.dir, { recursive: true, force: true });
    },
  };
});

containersSuite("proxy over gRPC", async (): Promise<SuiteFixture> => {
  const l = local();
  const server = new RpcServer({ service: "tasks", log: createLogger("tasks-test", "silent") });
  server.addService(CONTAINERS_SERVICE, containersHandlers(l.store));
  const addr = `unix://${path.join(l.dir, "tasks.sock")}`;
  await server.listen(addr);
  return {
    store: new ContainerStoreProxy(testChannels.get(addr)),
    events: l.events.events,
    cleanup: async () => {
      await server.shutdown(1000);
      await l.db.close();
      fs.rmSync(l.dir, { recursive: true, force: true });
    },
  };
});

after(() => testChannels.close());
