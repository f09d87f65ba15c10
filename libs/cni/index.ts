/** CNI for Flotilla: network config loading, plugin execution (ADD/DEL), persistent network namespaces. */
export type { NetworkConfList, PluginConf } from "./config";
export { checkPlugins, confFiles, findPlugin, loadNetwork, loopbackNetwork, parseNetworkConf, SUPPORTED_CNI_VERSIONS } from "./config";
export type { Attachment, CniExecOptions, CniResult } from "./exec";
export { addNetwork, CniPluginError, delNetwork, resultAddresses } from "./exec";
export { createNetns, isMounted, listNetns, mountsBelow, removeNetns } from "./netns";
