/** Running containers in pod sandboxes from a client: image resolution and the member container spec. */
export type { ImageRunConfig } from "./image";
export { chainId, hostArch, readJson, resolveImage } from "./image";
export type { SandboxMemberSpecOptions } from "./spec";
export { parseUser, sandboxMemberSpec } from "./spec";
