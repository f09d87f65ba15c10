/** CNI for Flotilla: network config loading, plugin execution (ADD/DEL), persistent network namespaces. */
export type { NetworkConfList, PluginConf } from "./config";
export { checkPlugins, confFiles, findPlugin, loadNetwork, loopbackNetwork, parseNetworkConf, SUPPORTED_CNI_VERSIONS } from "./config";
export type { Attachment, CniExecOptions, CniResult } from "./exec";
export { addNetwork, CniPluginError, delNetwork, resultAddresses } from "./exec";
export { createNetns, isMounted, listNetns, mountsBelow, removeNetns } from "./netns";
export type { BridgeNetworkSpec } from "./defaults";
export { createNetwork, DEFAULT_CNI_BIN_DIRS, DEFAULT_NETWORK, inspectNetwork, listNetworks, networkConfDir, ownConfDir, removeNetwork, SYSTEM_CNI_CONF_DIR } from "./defaults";
