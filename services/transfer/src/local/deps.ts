/** What the transferrers use: the other processes' stores (proxies in production) and shared state. */
import type { ContentStore } from "#libs/core/content";
import type { ImageStore } from "#libs/core/images";
import type { LeaseManager } from "#libs/core/leases";
import type { RegistryResolverSpec } from "#libs/core/transfer";
import { causeText, errorCode, ErrorCodes, FlotillaError, errFailedPrecondition, errInvalidArgument, errNotFound, errUnauthenticated, errUnavailable } from "#libs/errdefs";
import { OciFormatError } from "#libs/oci";
import { HostsConfigError, ReferenceError, RegistryClient, RegistryError, type HttpAgents } from "#libs/registry";
import type { BlobFetcher } from "./fetch";
import type { UnpackDeps } from "./unpack";
import type { Semaphore } from "./util";

export interface TransferConfig {
  maxConcurrentDownloads: number;
  maxConcurrentUploads: number;
  userAgent: string;
}

export const DEFAULT_TRANSFER_CONFIG: TransferConfig = { maxConcurrentDownloads: 3, maxConcurrentUploads: 3, userAgent: "flotilla/0.1" };

export interface TransferDeps extends UnpackDeps {
  images: ImageStore;
  leases: LeaseManager;
  fetcher: BlobFetcher;
  config: TransferConfig;
  /** Shared by every transfer of the process, as containerd's download/upload limiters. */
  downloads: Semaphore;
  uploads: Semaphore;
  /** Keep-alive connections to registries, shared by every transfer of the process. */
  agents: HttpAgents;
}

export function registryClient(deps: TransferDeps, reference: string, r: RegistryResolverSpec): RegistryClient {
  try {
    return new RegistryClient({
      reference,
      hostDir: r.hostDir || undefined,
      defaultScheme: r.defaultScheme || undefined,
      headers: r.headers,
      credentials: r.credentials,
      userAgent: deps.config.userAgent,
      debug: r.httpDebug && r.logs ? r.logs : undefined,
      agents: deps.agents,
    });
  } catch (e) {
    throw toNative(e);
  }
}

/** Registry, reference and format failures as errdefs classes. */
export function toNative(e: unknown, context?: string): unknown {
  const pre = context ? `${context}: ` : "";
  if (e instanceof RegistryError) {
    switch (e.kind) {
      // The registry's "<name>: not found" already ends with the class text: not twice.
      case "not-found": return errNotFound(pre + e.message.replace(/: not found$/, ""), { cause: e });
      case "unauthorized": return errUnauthenticated(pre + e.message, { cause: e });
      case "invalid": return errInvalidArgument(pre + e.message, { cause: e });
      case "unavailable": return errUnavailable(pre + e.message, { cause: e });
      default: return errFailedPrecondition(pre + e.message, { cause: e });
    }
  }
  if (e instanceof ReferenceError || e instanceof HostsConfigError || e instanceof OciFormatError) return errInvalidArgument(pre + e.message, { cause: e });
  if (context && e instanceof Error) {
    const code = errorCode(e);
    return code === ErrorCodes.Unknown ? new Error(pre + e.message, { cause: e }) : new FlotillaError(code, `${pre}${causeText(e)}: ${code}`, { cause: e });
  }
  return e;
}

/** Wait for every promise; abort the rest on the first failure, and throw it once all have settled. */
export async function settleAll(ps: Promise<unknown>[], ac?: AbortController): Promise<void> {
  let first: { e: unknown } | undefined;
  await Promise.all(ps.map((p) => p.catch((e) => {
    if (!first) {
      first = { e };
      ac?.abort(e);
    }
  })));
  if (first) throw first.e;
}
