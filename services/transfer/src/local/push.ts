import type { CallContext } from "../../../../libs/context";
import type { ImageStoreSpec, OCIRegistrySpec, ProgressFn } from "../../../../libs/core/transfer";
import { errNotImplemented } from "../../../../libs/errdefs";
import type { TransferDeps } from "./deps";
export async function push(_deps: TransferDeps, _ctx: CallContext, _src: ImageStoreSpec, _dst: OCIRegistrySpec, _p?: ProgressFn): Promise<void> {
  throw errNotImplemented("push");
}
