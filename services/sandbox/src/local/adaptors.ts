/** Filter adaptor for sandbox records: `id`, `sandboxer`, `runtime.name`, `labels.<k>`, `extensions.<k>` (presence). */
import { mapField, NOT_PRESENT, present, type Adaptor } from "#libs/filters";
import type { Sandbox } from "#libs/core/sandbox";

export function sandboxAdaptor(sb: Sandbox): Adaptor {
  return (fp) => {
    switch (fp[0]) {
      case "id": return present(sb.id);
      case "sandboxer": return present(sb.sandboxer);
      case "runtime": return fp[1] === "name" && fp.length === 2 ? present(sb.runtime.name) : NOT_PRESENT;
      case "labels": return mapField(sb.labels, fp.slice(1));
      case "extensions": {
        const key = fp.slice(1).join(".");
        const ext = key ? sb.extensions[key] : undefined;
        return ext ? present(ext.typeUrl) : NOT_PRESENT;
      }
      default: return NOT_PRESENT;
    }
  };
}
