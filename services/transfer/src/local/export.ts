import type { CallContext } from "../../../../libs/context";
import type { ExportStreamSpec, ImageStoreSpec, ProgressFn } from "../../../../libs/core/transfer";
import { errNotImplemented } from "../../../../libs/errdefs";
import type { TransferDeps } from "./deps";
export async function exportArchive(_deps: TransferDeps, _ctx: CallContext, _src: ImageStoreSpec, _dst: ExportStreamSpec, _p?: ProgressFn): Promise<void> {
  throw errNotImplemented("export");
}
