/**
 * Field-mask handling for containerd's map fields (`labels`, `labels.<key>`, `annotations`, `extensions`...):
 * a path `<field>` replaces the whole map, `<field>.<key>` sets one key, and an empty or missing value deletes it.
 */

/** True when `path` addresses the map field `field` (whole or one key). */
export function addressesMap(path: string, field: string): boolean {
  return path === field || path.startsWith(field + ".");
}

/**
 * Apply the paths that address map `field` to `current`, taking values from `incoming`.
 * Returns the new map; empty values are dropped, as containerd's metadata store does.
 */
export function applyMapMask<V>(
  field: string,
  current: Record<string, V> | undefined,
  incoming: Record<string, V> | undefined,
  paths: readonly string[],
  isEmpty: (v: V) => boolean = (v) => v === "" || v === undefined || v === null,
): Record<string, V> {
  let out: Record<string, V> = { ...(current ?? {}) };
  for (const p of paths) {
    if (p === field) {
      out = { ...(incoming ?? {}) };
    } else if (p.startsWith(field + ".")) {
      const key = p.slice(field.length + 1);
      const v = incoming?.[key];
      if (v === undefined || isEmpty(v)) delete out[key];
      else out[key] = v;
    }
  }
  for (const [k, v] of Object.entries(out)) if (isEmpty(v)) delete out[k];
  return out;
}

/** Drop empty values from a label map (containerd never stores them). */
export function compactLabels(labels: Record<string, string> | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(labels ?? {})) if (v !== "") out[k] = v;
  return out;
}

/** containerd's labels.Validate: key plus value at most 4096 bytes. */
export const MAX_LABEL_SIZE = 4096;
export function validateLabels(labels: Record<string, string> | undefined): string | undefined {
  for (const [k, v] of Object.entries(labels ?? {})) {
    if (Buffer.byteLength(k) + Buffer.byteLength(v) > MAX_LABEL_SIZE) {
      return `label key and value greater than maximum size (${MAX_LABEL_SIZE} bytes), key: ${k.slice(0, 10)}`;
    }
  }
  return undefined;
}
