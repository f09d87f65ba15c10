/** Namespaces: the domain type and the store contract (served by the images process). */
import type { CallContext } from "../context";

export interface Namespace {
  name: string;
  labels: Record<string, string>;
}

export interface NamespaceStore {
  /** NotFound when the namespace does not exist. */
  get(ctx: CallContext, name: string): Promise<Namespace>;
  list(ctx: CallContext): Promise<Namespace[]>;
  /** InvalidArgument for a bad name or labels; AlreadyExists when present. */
  create(ctx: CallContext, ns: Namespace): Promise<Namespace>;
  /** `paths` are field-mask paths (`labels`, `labels.<key>`); none replaces the labels. NotFound when missing. */
  update(ctx: CallContext, ns: Namespace, paths: string[]): Promise<Namespace>;
  /** NotFound when missing; FailedPrecondition when anything still lives in it. */
  delete(ctx: CallContext, name: string): Promise<void>;
}

export const NAMESPACE_EVENTS = {
  create: { topic: "/namespaces/create", type: "containerd.events.NamespaceCreate" },
  update: { topic: "/namespaces/update", type: "containerd.events.NamespaceUpdate" },
  delete: { topic: "/namespaces/delete", type: "containerd.events.NamespaceDelete" },
} as const;
