/**
 * Sandboxes: containerd's sandbox metadata store and sandbox controllers, as contracts.
 *
 * - `SandboxStore` keeps sandbox records (containerd.services.sandbox.v1.Store). The local store lives
 *   in the sandbox process (services/sandbox/src/local/store.ts, on LMDB); `SandboxStoreProxy`
 *   (libs/clients/sandbox.ts) implements it over gRPC. Both pass test/sandbox/store-suite.ts.
 * - `SandboxController` runs one kind of sandbox (`podsandbox`: a pause container through the tasks
 *   process plus CNI networking; `shim`: a shim's containerd.runtime.sandbox.v1.Sandbox API).
 * - `SandboxControllers` is containerd.services.sandbox.v1.Controller: every call names its
 *   `sandboxer`; an empty one is InvalidArgument, an unknown one NotFound. It publishes
 *   /sandboxes/create, /sandboxes/start and (only when someone waits) /sandboxes/exit.
 *
 * Every method takes the call context first and requires a namespace (FailedPrecondition without one).
 * No runtime dependencies: types, constants and pure helpers only.
 */
import type { CallContext } from "../context";
import type { Mount } from "./snapshots";

/** An opaque typed value (a `google.protobuf.Any`), passed through untouched. */
export interface TypedValue {
  typeUrl: string;
  value: Uint8Array;
}

/**
 * A namespaced metadata store of records by id (containerd's containers and sandbox stores). Every
 * method requires a namespace; `get`, `update` and `delete` are NotFound when the id is absent, `create`
 * AlreadyExists when it is taken. `fields` of `update` names what to change, none meaning every
 * updatable field; `list` returns the records matching any of `filters`, by id.
 */
export interface MetadataStore<R, I> {
  create(ctx: CallContext, input: I): Promise<R>;
  update(ctx: CallContext, input: I, fields?: readonly string[]): Promise<R>;
  get(ctx: CallContext, id: string): Promise<R>;
  list(ctx: CallContext, filters?: readonly string[]): Promise<R[]>;
  delete(ctx: CallContext, id: string): Promise<void>;
}

export interface SandboxRuntime {
  /** e.g. `io.containerd.runc.v2`. */
  name: string;
  options?: TypedValue;
}

export interface Sandbox {
  /** A containerd identifier (InvalidArgument otherwise). */
  id: string;
  runtime: SandboxRuntime;
  /** The sandbox's OCI runtime spec (`types.containerd.io/opencontainers/runtime-spec/1/Spec`, JSON), if any. */
  spec?: TypedValue;
  labels: Record<string, string>;
  extensions: Record<string, TypedValue>;
  /** The controller that runs it (`podsandbox`, `shim`). */
  sandboxer: string;
  createdAt: Date;
  updatedAt: Date;
}

/** What a caller provides to create or update a sandbox record (the store stamps the times). */
export type SandboxInput = Omit<Sandbox, "createdAt" | "updatedAt" | "labels" | "extensions" | "sandboxer"> & {
  labels?: Record<string, string>;
  extensions?: Record<string, TypedValue>;
  sandboxer?: string;
};

/** The fields `update` accepts (plus `labels.<k>` and `extensions.<k>`). */
export const SANDBOX_UPDATE_FIELDS = ["labels", "extensions", "spec", "runtime"] as const;

/**
 * Sandbox records. `create`: InvalidArgument for a bad id, an empty runtime name or oversized labels.
 * `update` fields: `labels`, `labels.<k>`, `extensions`, `extensions.<k>`, `spec`, `runtime`; none
 * means all four (and then the runtime name must not change); other fields are InvalidArgument.
 * `list` filters: `id`, `sandboxer`, `runtime.name`, `labels.<k>`, `extensions.<k>`.
 */
export type SandboxStore = MetadataStore<Sandbox, SandboxInput>;

/** Controller.Create's options beyond the sandbox record. */
export interface SandboxCreateOptions {
  rootfs?: Mount[];
  options?: TypedValue;
  /** A network namespace the caller made; empty lets the controller make one (podsandbox: with CNI). */
  netnsPath?: string;
  annotations?: Record<string, string>;
}

/** What Start returns (containerd's sandbox.ControllerInstance). */
export interface ControllerInstance {
  sandboxId: string;
  pid: number;
  createdAt: Date;
  labels: Record<string, string>;
  /** Task API endpoint for containers of this sandbox, `<proto>+<address>` (empty: none). */
  address: string;
  version: number;
  spec?: TypedValue;
}

export interface SandboxExitStatus {
  exitStatus: number;
  exitedAt: Date;
}

export const SandboxState = {
  Ready: "SANDBOX_READY",
  NotReady: "SANDBOX_NOTREADY",
  Unknown: "SANDBOX_UNKNOWN",
} as const;
export type SandboxState = (typeof SandboxState)[keyof typeof SandboxState];

export interface ControllerStatus {
  sandboxId: string;
  pid: number;
  /** One of `SandboxState` for the controllers here; other controllers may report their own. */
  state: string;
  info: Record<string, string>;
  createdAt?: Date;
  exitedAt?: Date;
  extra?: TypedValue;
  address: string;
  version: number;
}

export interface SandboxPlatform {
  os: string;
  architecture: string;
  variant: string;
}

export interface SandboxMetric {
  timestamp: Date;
  id: string;
  data?: TypedValue;
}

/** One sandbox implementation. NotFound for an unknown sandbox id. */
export interface SandboxController {
  /** Prepare the sandbox (podsandbox: its network). AlreadyExists when it exists. */
  create(ctx: CallContext, sandbox: SandboxInput, opts?: SandboxCreateOptions): Promise<void>;
  /** Start it; FailedPrecondition when it is not in a startable state. */
  start(ctx: CallContext, id: string): Promise<ControllerInstance>;
  platform(ctx: CallContext, id: string): Promise<SandboxPlatform>;
  /** Stop it and the containers in it; no-op when already stopped. `timeoutSecs` 0: no grace. */
  stop(ctx: CallContext, id: string, opts?: { timeoutSecs?: number }): Promise<void>;
  /** Resolve when the sandbox's process has exited. */
  wait(ctx: CallContext, id: string): Promise<SandboxExitStatus>;
  status(ctx: CallContext, id: string, verbose?: boolean): Promise<ControllerStatus>;
  /** Stop if needed, then release everything the sandbox holds and forget it. */
  shutdown(ctx: CallContext, id: string): Promise<void>;
  metrics(ctx: CallContext, id: string): Promise<SandboxMetric>;
  /** Update the controller's copy of the record (fields as for SandboxStore.update). */
  update(ctx: CallContext, id: string, sandbox: SandboxInput, fields?: readonly string[]): Promise<void>;
}

/** containerd.services.sandbox.v1.Controller: the controllers by name. */
export interface SandboxControllers {
  /** InvalidArgument for an empty name, NotFound for an unknown one. */
  get(sandboxer: string): SandboxController;
  names(): string[];
}

export const SANDBOX_EVENTS = {
  create: { topic: "/sandboxes/create", type: "containerd.events.SandboxCreate" },
  start: { topic: "/sandboxes/start", type: "containerd.events.SandboxStart" },
  exit: { topic: "/sandboxes/exit", type: "containerd.events.SandboxExit" },
} as const;

export const SANDBOXERS = { podsandbox: "podsandbox", shim: "shim" } as const;

/** Labels and annotations Flotilla puts on the containers of a sandbox. */
export const SANDBOX_LABELS = {
  /** runtime v2 shim grouping: containers with the same value share one shim. */
  runcGroup: "io.containerd.runc.v2.group",
  /** The CRI's sandbox id annotation (also read for shim grouping). */
  criSandboxId: "io.kubernetes.cri.sandbox-id",
  /** `sandbox` for the pause container, `container` for the others (as the CRI). */
  criContainerType: "io.kubernetes.cri.container-type",
  /** Controller.Create annotation choosing the network: `cni` (default), `none` (loopback only), `host`. */
  network: "io.flotilla.sandbox/network",
  /** Controller.Create annotation: port mappings for CNI's portmap, JSON `[{hostPort, containerPort, protocol}]`. */
  portMappings: "io.flotilla.sandbox/port-mappings",
  /** Controller.Create annotations (the CRI's network config): the CNI conf dir and the plugin dirs (`:`-separated) of this sandbox, instead of the controller's. */
  cniConfDir: "io.flotilla.sandbox/cni-conf-dir",
  cniBinDirs: "io.flotilla.sandbox/cni-bin-dirs",
  /** Controller.Create annotations: "true" shares the host's PID / IPC namespace (the CRI's NODE mode). */
  hostPid: "io.flotilla.sandbox/host-pid",
  hostIpc: "io.flotilla.sandbox/host-ipc",
  /** Controller.Create annotation: kernel parameters of the pod, JSON `{"net.ipv4.ip_forward": "1"}`. */
  sysctls: "io.flotilla.sandbox/sysctls",
} as const;

/** The OCI runtime spec's type URL in a container's or sandbox's `spec` Any. */
export const OCI_SPEC_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/Spec";

/** `runtime.name` when a sandbox record has none (the pause container runs with it). */
export const DEFAULT_SANDBOX_RUNTIME = "io.containerd.runc.v2";
