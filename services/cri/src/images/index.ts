/**
 * The images part (ImageService: ListImages, ImageStatus, PullImage, RemoveImage, ImageFsInfo) and the
 * image lookup container creation uses.
 *
 * PLACEHOLDER (skeleton): helper D replaces this file; every RPC answers Unimplemented until then.
 */
import { errNotImplemented } from "#libs/errdefs";
import type { CriDeps, ImagesPart } from "../parts";

const notYet = (what: string) => (): Promise<never> => Promise.reject(errNotImplemented(`${what} not implemented`));

export function createImages(_deps: CriDeps): ImagesPart {
  return {
    list: async () => ({ images: [] }),
    status: async () => ({ image: null, info: {} }),
    pull: notYet("PullImage"),
    remove: notYet("RemoveImage"),
    fsInfo: async () => ({ image_filesystems: [], container_filesystems: [] }),
    resolve: notYet("image lookup"),
    close: async () => {},
  };
}
