/**
 * The gateway's grpc.health.v1.Health: each service's status is its owner's, as the owner itself
 * answers it. The gateway asks the owner's own Health (a short deadline; an answer is kept for a
 * moment so probes arriving together cost one call) and says NOT_SERVING when the owner does not
 * answer or does not serve that service. The overall "" service is SERVING only while every owner
 * is. Watch follows an owner going down and coming back.
 */
import { background } from "#libs/context";
import { errNotFound } from "#libs/errdefs";
import { HEALTH_SERVICE as HEALTH, HealthClient, HealthStatus } from "#libs/clients/health";
import { serviceHandlers, type ServiceHandlers } from "#libs/grpc/server";
import type { ChannelPool } from "#libs/grpc/client";

const { SERVING, NOT_SERVING, SERVICE_UNKNOWN } = HealthStatus;

export interface OwnerHealthOptions {
  /** Service full name -> its owner's address. */
  routes: Record<string, string>;
  /** Services the gateway serves itself (SERVING while it runs). */
  own: readonly string[];
  /** The gateway's channels to the owners. */
  channels: ChannelPool;
  /** How long one owner answer is reused (default 500 ms). */
  cacheMs?: number;
  /** The deadline of one question to an owner (default 1 s). */
  deadlineMs?: number;
  /** How often a Watch asks again (default 500 ms). */
  watchMs?: number;
  /** Aborted when the gateway stops: every Watch then sends NOT_SERVING and ends, as grpc-go's health server does on shutdown. */
  stopping?: AbortSignal;
}

interface Answer {
  status: number;
  at: number;
  pending?: Promise<number>;
}

export class OwnerHealth {
  private readonly clients = new Map<string, HealthClient>();
  private readonly answers = new Map<string, Answer>();
  private readonly owners: string[];
  private readonly cacheMs: number;
  private readonly deadlineMs: number;
  private readonly watchMs: number;

  constructor(private readonly opts: OwnerHealthOptions) {
    this.owners = [...new Set(Object.values(opts.routes))];
    this.cacheMs = opts.cacheMs ?? 500;
    this.deadlineMs = opts.deadlineMs ?? 1000;
    this.watchMs = opts.watchMs ?? 500;
  }

  /** The status of `service` (undefined: a service nobody here serves). */
  async status(service: string): Promise<number | undefined> {
    if (service === "") {
      const all = await Promise.all(this.owners.map((a) => this.ask(a, "")));
      return all.every((s) => s === SERVING) ? SERVING : NOT_SERVING;
    }
    if (this.opts.own.includes(service)) return SERVING;
    const owner = this.opts.routes[service];
    return owner === undefined ? undefined : this.ask(owner, service);
  }

  /** The owner at `address`'s own answer for `service`, NOT_SERVING when it gives none in time. */
  private ask(address: string, service: string): Promise<number> {
    const key = `${address}\n${service}`;
    const cur = this.answers.get(key);
    if (cur?.pending) return cur.pending;
    if (cur && Date.now() - cur.at < this.cacheMs) return Promise.resolve(cur.status);
    let client = this.clients.get(address);
    if (!client) this.clients.set(address, (client = new HealthClient(this.opts.channels.get(address))));
    const ctx = { ...background(), deadline: new Date(Date.now() + this.deadlineMs) };
    const pending = client.check(ctx, service).then(
      (status) => (status === SERVING ? SERVING : NOT_SERVING),
      () => NOT_SERVING,
    );
    const entry: Answer = { status: cur?.status ?? NOT_SERVING, at: cur?.at ?? 0, pending };
    this.answers.set(key, entry);
    void pending.then((status) => this.answers.set(key, { status, at: Date.now() }));
    return pending;
  }

  handlers(): ServiceHandlers<typeof HEALTH> {
    return serviceHandlers(HEALTH, {
      Check: async (_ctx, req) => {
        const service = String(req.service ?? "");
        const s = await this.status(service);
        if (s === undefined) throw errNotFound(`service ${JSON.stringify(service)}: unknown service`);
        return { status: s };
      },
      Watch: async (ctx, req, send) => {
        const service = String(req.service ?? "");
        const stopping = this.opts.stopping;
        const signal = stopping ? AbortSignal.any([ctx.signal, stopping]) : ctx.signal;
        let last: number | undefined;
        while (!signal.aborted) {
          const s = (await this.status(service)) ?? SERVICE_UNKNOWN;
          if (s !== last && !signal.aborted) {
            last = s;
            await send({ status: s });
          }
          await new Promise<void>((resolve) => {
            const t = setTimeout(done, this.watchMs);
            function done(): void {
              clearTimeout(t);
              signal.removeEventListener("abort", done);
              resolve();
            }
            signal.addEventListener("abort", done, { once: true });
          });
        }
        if (stopping?.aborted && !ctx.signal.aborted && last !== NOT_SERVING) await send({ status: NOT_SERVING });
      },
    });
  }
}
