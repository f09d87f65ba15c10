/**
 * gRPC adapter for containerd.services.content.v1.Content: validate, call the ContentStore, convert.
 * The Write loop is containerd's contentserver protocol (STAT / WRITE / COMMIT over one bidi stream).
 */
import type { CallContext } from "#libs/context";
import { errAlreadyExists, errCanceled, errInvalidArgument, errOutOfRange, FlotillaError, errorCode, isNotFound, ErrorCodes } from "#libs/errdefs";
import { serviceHandlers, type Msg, type RpcServer, type Send, type ServiceHandlers } from "#libs/grpc/server";
import { DECODE_OPTIONS, lookupType, toTimestamp, validateWire } from "#libs/proto";
import { MAX_CHUNK, isValidDigest, type ContentStore, type IngestStatus } from "#libs/core/content";
import { CONTENT_SERVICE, infoFromProto } from "#libs/clients/content";
import { infoToProto } from "../../public";
import type { Input, ServerRequest, ServerResponse } from "#libs/proto/types";

export { CONTENT_SERVICE };

export const WriteAction = { STAT: 0, WRITE: 1, COMMIT: 2 } as const;

/** Entries per List response, as containerd batches them. */
const LIST_BATCH = 100;

export function statusToProto(s: IngestStatus): Input["containerd.services.content.v1.Status"] {
  return {
    started_at: toTimestamp(s.startedAt),
    updated_at: toTimestamp(s.updatedAt),
    ref: s.ref,
    offset: s.offset,
    total: s.total,
    expected: s.expected,
  };
}

function checkDigest(d: unknown): string {
  const s = String(d ?? "");
  if (!isValidDigest(s)) throw errInvalidArgument(`${JSON.stringify(s)} failed validation`);
  return s;
}

/** Prefix an error's message, keeping its class (containerd's ToGRPCf). */
function wrapf(err: unknown, prefix: string): unknown {
  const code = errorCode(err);
  if (code === ErrorCodes.Unknown) return err;
  return new FlotillaError(code, `${prefix}: ${(err as Error).message}`, { cause: err });
}

/** The next request, or a Canceled error once the call is canceled (the stream may never end by itself). */
function nextOrAbort<T>(it: AsyncIterator<T>, signal: AbortSignal): Promise<IteratorResult<T>> {
  if (signal.aborted) return Promise.reject(errCanceled("write canceled"));
  return new Promise((resolve, reject) => {
    const onAbort = (): void => reject(errCanceled("write canceled"));
    signal.addEventListener("abort", onAbort, { once: true });
    it.next().then(
      (r) => { signal.removeEventListener("abort", onAbort); resolve(r); },
      (e: unknown) => { signal.removeEventListener("abort", onAbort); reject(e); },
    );
  });
}

async function write(store: ContentStore, ctx: CallContext, reqs: AsyncIterable<ServerRequest<typeof CONTENT_SERVICE, "Write">>, send: Send<ServerResponse<typeof CONTENT_SERVICE, "Write">>): Promise<void> {
  const it = reqs[Symbol.asyncIterator]();
  let r = await nextOrAbort(it, ctx.signal);
  if (r.done) return;
  let req = r.value;
  const ref = String(req.ref ?? "");
  if (!ref) throw errInvalidArgument("first message must have a reference");
  let total = Number(req.total ?? 0);
  let expected = String(req.expected ?? "");
  if (expected) checkDigest(expected);
  // Opening the writer locks the ref for the whole session.
  const wr = await store.writer(ctx, { ref, total, expected });
  let last: ServerResponse<typeof CONTENT_SERVICE, "Write"> | undefined;
  try {
    for (;;) {
      const ws = await wr.status();
      const msg: ServerResponse<typeof CONTENT_SERVICE, "Write"> = { action: req.action, offset: ws.offset };
      if (req.expected) {
        expected = checkDigest(req.expected);
        let exists = true;
        try {
          await store.info(ctx, expected);
        } catch (e) {
          if (!isNotFound(e)) throw e;
          exists = false;
        }
        if (exists) {
          await wr.close();
          await store.abort(ctx, ref).catch(() => undefined);
          throw errAlreadyExists(`blob with expected digest ${expected} exists`);
        }
      }
      if (Number(req.total) > 0) total = Number(req.total);
      switch (req.action) {
        case WriteAction.STAT:
          msg.digest = wr.digest();
          msg.started_at = toTimestamp(ws.startedAt);
          msg.updated_at = toTimestamp(ws.updatedAt);
          msg.total = total;
          break;
        case WriteAction.WRITE:
        case WriteAction.COMMIT: {
          const off = Number(req.offset ?? 0);
          if (off > 0 && off !== ws.offset) throw errOutOfRange(`write @${off} must occur at current offset ${ws.offset}`);
          if (off === 0 && ws.offset > 0) {
            await wr.truncate(0);
            msg.offset = 0;
          }
          const data = req.data as Buffer | undefined;
          if (data && data.length > 0) msg.offset = await wr.write(data);
          if (req.action === WriteAction.COMMIT) {
            const labels = req.labels as Record<string, string> | undefined;
            await wr.commit(total, expected, labels && Object.keys(labels).length ? labels : undefined);
          }
          msg.digest = wr.digest();
          break;
        }
        default:
          break;
      }
      await send(msg);
      last = msg;
      if (req.action === WriteAction.COMMIT) break;
      r = await nextOrAbort(it, ctx.signal);
      if (r.done) break;
      req = r.value;
    }
  } finally {
    await wr.close();
  }
  // containerd sends the last response once more when the session ends cleanly (after COMMIT, or at the
  // client's half-close); clients ignore it.
  if (last) await send(last);
}

/** Read buffers are reused across calls (send() copies what it sends), a few at most. */
const freeBuffers: Buffer[] = [];
const takeBuffer = (): Buffer => freeBuffers.pop() ?? Buffer.allocUnsafe(MAX_CHUNK);
const giveBuffer = (b: Buffer): void => void (freeBuffers.length < 8 && freeBuffers.push(b));

async function read(store: ContentStore, ctx: CallContext, req: ServerRequest<typeof CONTENT_SERVICE, "Read">, send: Send<ServerResponse<typeof CONTENT_SERVICE, "Read">>): Promise<void> {
  const digest = checkDigest(req.digest);
  const ra = await store.readerAt(ctx, digest);
  try {
    let offset = Math.max(0, Number(req.offset ?? 0));
    let size = Number(req.size ?? 0);
    if (offset > ra.size) throw errOutOfRange(`read past object length ${ra.size} bytes`);
    if (size <= 0 || offset + size > ra.size) size = ra.size - offset;
    // One buffer is enough: send() encodes (copies) the message before it returns its promise, so the next
    // read overlaps the previous send's flow-control wait.
    const buf = takeBuffer();
    try {
      let pending: Promise<void> = Promise.resolve();
      while (size > 0) {
        const n = await ra.readAt(buf.subarray(0, Math.min(buf.length, size)), offset);
        await pending;
        if (n === 0) throw errOutOfRange(`unexpected end of blob ${digest} at ${offset}`);
        pending = send({ offset, data: buf.subarray(0, n) });
        pending.catch(() => undefined);
        offset += n;
        size -= n;
      }
      await pending;
    } finally {
      giveBuffer(buf);
    }
  } finally {
    await ra.close();
  }
}

/** Register containerd.services.content.v1.Content on `server`. */
export function registerContentService(server: RpcServer, store: ContentStore): void {
  server.addService(CONTENT_SERVICE, contentHandlers(store));
}

/** Handlers of every Content method. */
export function contentHandlers(store: ContentStore): ServiceHandlers<typeof CONTENT_SERVICE> {
  return serviceHandlers(CONTENT_SERVICE, {
    Info: async (ctx, req) => ({ info: infoToProto(await store.info(ctx, checkDigest(req.digest))) }),
    Update: async (ctx, req) => {
      if (!req.info) throw errInvalidArgument("info must be set");
      const info = infoFromProto(req.info);
      checkDigest(info.digest);
      return { info: infoToProto(await store.update(ctx, info, (req.update_mask?.paths as string[] | undefined) ?? [])) };
    },
    List: async (ctx, req, send) => {
      let batch: Msg[] = [];
      await store.walk(ctx, async (info) => {
        batch.push(infoToProto(info));
        if (batch.length >= LIST_BATCH) {
          const b = batch;
          batch = [];
          await send({ info: b });
        }
      }, req.filters as string[]);
      if (batch.length) await send({ info: batch });
    },
    Delete: async (ctx, req) => {
      await store.delete(ctx, checkDigest(req.digest));
      return {};
    },
    Read: (ctx, req, send) => read(store, ctx, req, send),
    Status: async (ctx, req) => {
      const ref = String(req.ref ?? "");
      try {
        return { status: statusToProto(await store.status(ctx, ref)) };
      } catch (e) {
        throw wrapf(e, `could not get status for ref ${JSON.stringify(ref)}`);
      }
    },
    ListStatuses: async (ctx, req) => ({ statuses: (await store.listStatuses(ctx, req.filters as string[])).map(statusToProto) }),
    Abort: async (ctx, req) => {
      await store.abort(ctx, String(req.ref ?? ""));
      return {};
    },
    Write: (ctx, reqs, send) => write(store, ctx, reqs, send),
  });
}
