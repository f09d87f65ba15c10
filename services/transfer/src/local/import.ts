import type { CallContext } from "../../../../libs/context";
import type { ExportStreamSpec, ImageStoreSpec, ImportStreamSpec, ProgressFn } from "../../../../libs/core/transfer";
import { errNotImplemented } from "../../../../libs/errdefs";
import type { TransferDeps } from "./deps";
export async function importArchive(_deps: TransferDeps, _ctx: CallContext, _src: ImportStreamSpec, _dst: ImageStoreSpec, _p?: ProgressFn): Promise<void> {
  throw errNotImplemented("import");
}
export async function copyArchive(_src: ImportStreamSpec, _dst: ExportStreamSpec, _p?: ProgressFn): Promise<void> {
  throw errNotImplemented("copy");
}
