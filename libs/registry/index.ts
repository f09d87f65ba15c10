/** The OCI distribution client: references, hosts configuration, auth and the repository client. */
export type { Reference } from "./reference";
export type { RegistryHost, HostCapability, HostOptions } from "./hosts";
export type { Credentials, CredentialRequest, CredentialsFn, AuthType, Challenge } from "./auth";
export type { RegistryClientOptions } from "./client";
export type { RetryPolicy, HttpRequest, HttpResponse } from "./http";

export { parseReference, normalizeReference, formatReference, locator, objectOf, isLocalhost, ReferenceError } from "./reference";
export { configureHosts, HostsConfigError } from "./hosts";
export { AuthTypes, parseChallenges, repositoryScope, UnauthorizedError } from "./auth";
export { RegistryClient, RegistryError, MANIFEST_ACCEPT, sniffMediaType, verify } from "./client";
export { DEFAULT_RETRY, backoffMs, isRetryableError, isRetryableStatus, HttpAgents, HttpError } from "./http";
