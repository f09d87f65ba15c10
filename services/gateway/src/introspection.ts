/**
 * Introspection for the whole fleet: Plugins merges every process's own plugin list (asked of each
 * process directly); a process that is down shows its gRPC plugins with an `unavailable` init error.
 * Server returns this installation's UUID, persisted under `root`.
 */
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { Status as status } from "#libs/grpc/status";
import { background, type CallContext } from "#libs/context";
import { parseAll } from "#libs/filters";
import { INTROSPECTION_SERVICE, IntrospectionProxy } from "#libs/clients/introspection";
import { serviceHandlers, type ServiceHandlers } from "#libs/grpc/server";
import { pluginAdaptor, pluginToProto, GRPC_PLUGIN, type PluginInfo } from "#libs/service";
import type { ChannelPool } from "#libs/grpc/client";
import { BACKENDS, OWNED_SERVICES, type BackendName } from "#libs/topology";

/** Read the UUID at `file`, creating it (fsync'ed, write-then-rename) on first use. */
export function loadOrCreateUUID(file: string): string {
  try {
    const v = fs.readFileSync(file, "utf8").trim();
    if (/^[0-9a-f-]{36}$/.test(v)) return v;
  } catch {
    /* first start */
  }
  const uuid = crypto.randomUUID();
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const tmp = `${file}.tmp-${process.pid}`;
  const fd = fs.openSync(tmp, "w", 0o644);
  fs.writeSync(fd, uuid + "\n");
  fs.fsyncSync(fd);
  fs.closeSync(fd);
  fs.renameSync(tmp, file);
  const dfd = fs.openSync(path.dirname(file), "r");
  fs.fsyncSync(dfd);
  fs.closeSync(dfd);
  return uuid;
}

/** gRPC service name -> containerd plugin id, for listing a process that is down. */
function grpcPluginId(service: string): string {
  const m = /^containerd\.services\.([a-z]+)\.v1\.([A-Za-z]+)$/.exec(service);
  if (!m) return service;
  if (m[1] === "sandbox") return m[2] === "Store" ? "sandboxes" : "sandbox-controllers";
  return m[1]!;
}

export function introspectionHandlers(opts: { uuidFile: string; addresses: Record<BackendName, string>; ownPlugins: PluginInfo[]; channels: ChannelPool }): ServiceHandlers<typeof INTROSPECTION_SERVICE> {
  const uuid = loadOrCreateUUID(opts.uuidFile);
  const clients = Object.fromEntries(BACKENDS.map((b) => [b, new IntrospectionProxy(opts.channels.get(opts.addresses[b]))])) as Record<BackendName, IntrospectionProxy>;

  async function pluginsOf(ctx: CallContext, b: BackendName): Promise<Record<string, unknown>[]> {
    try {
      const c: CallContext = { ...background(ctx.namespace), trace: ctx.trace, deadline: new Date(Date.now() + 5000) };
      return (await clients[b].plugins(c)).map(pluginToProto);
    } catch (e) {
      const message = `${b} service unavailable: ${(e as Error).message}`;
      return OWNED_SERVICES[b].map((s) => pluginToProto({ type: GRPC_PLUGIN, id: grpcPluginId(s), initErr: { code: status.UNAVAILABLE, message } }));
    }
  }

  return serviceHandlers(INTROSPECTION_SERVICE, {
    Plugins: async (ctx, req) => {
      const filter = parseAll(req.filters ?? []);
      const lists = await Promise.all(BACKENDS.map((b) => pluginsOf(ctx, b)));
      const all = [...opts.ownPlugins.map(pluginToProto), ...lists.flat()];
      return { plugins: all.filter((p) => filter.match(pluginAdaptor(p))) };
    },
    Server: async () => ({ uuid, pid: process.pid, pidns: 0, deprecations: [] }),
  });
}
