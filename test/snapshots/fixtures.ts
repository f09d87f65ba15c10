/** Snapshotter fixtures on temporary roots: the local implementations and the gRPC proxy in front of them. */
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import pino from "pino";
import { RpcServer } from "#libs/grpc/server";
import { SnapshotterProxy } from "#libs/clients/snapshots";
import type { CallContext } from "#libs/context";
import { NativeBackend, OverlayBackend } from "#services/snapshots/src/local/backends";
import { openSnapshotsDB, type SnapshotsDB } from "#services/snapshots/src/local/db";
import { LocalSnapshotter } from "#services/snapshots/src/local/metastore";
import { LocalSnapshotterSet } from "#services/snapshots/src/local/set";
import { SNAPSHOTS_SERVICE, snapshotsHandlers } from "#services/snapshots/src/server/snapshots";
import type { SnapshotterFixture } from "./suite";
import { testChannels } from "../harness";

export type BackendName = "overlayfs" | "native";

export interface LocalFixture extends SnapshotterFixture {
  sn: LocalSnapshotter;
  root: string;
  db: SnapshotsDB;
  backendRoot: string;
}

export function tempDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

export async function localFixture(backend: BackendName, root = tempDir("flt-sn-")): Promise<LocalFixture> {
  const db = openSnapshotsDB(root);
  const backendRoot = path.join(root, backend);
  const b = backend === "overlayfs" ? new OverlayBackend(backendRoot) : new NativeBackend(backendRoot);
  const events: { topic: string; body: Record<string, unknown> }[] = [];
  const sn = new LocalSnapshotter({
    db,
    backend: b,
    events: { record: (_db: unknown, _ctx: CallContext, topic: string, _type: string, body: Record<string, unknown>) => void events.push({ topic, body }) },
  });
  await sn.reconcile();
  return {
    sn, root, db, backendRoot, events,
    close: async () => {
      await sn.cleanup({} as CallContext).catch(() => undefined);
      await db.close();
      fs.rmSync(root, { recursive: true, force: true });
    },
  };
}

export async function proxyFixture(backend: BackendName): Promise<SnapshotterFixture> {
  const local = await localFixture(backend);
  const server = new RpcServer({ service: "snapshots-test", log: pino({ level: "silent" }) });
  server.addService(SNAPSHOTS_SERVICE, snapshotsHandlers(new LocalSnapshotterSet(new Map([[backend, local.sn]]))));
  const sock = path.join(local.root, "snapshots.sock");
  await server.listen(`unix://${sock}`);
  return {
    sn: SnapshotterProxy.connect(testChannels.get(`unix://${sock}`), backend),
    events: local.events,
    close: async () => {
      await server.shutdown(1000);
      await local.close();
    },
  };
}
