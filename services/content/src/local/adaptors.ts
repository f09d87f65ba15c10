/** Filter adaptors: content infos (`digest`, `size`, `labels.<key>`) and ingest statuses (`ref`). */
import { mapField, NOT_PRESENT, present, type Adaptor } from "#libs/filters";
import type { ContentInfo, IngestStatus } from "#libs/core/content";

export function infoAdaptor(info: ContentInfo): Adaptor {
  return (fp) => {
    switch (fp[0]) {
      case "digest": return present(info.digest);
      case "size": return present(String(info.size));
      case "labels": return mapField(info.labels, fp.slice(1));
      default: return NOT_PRESENT;
    }
  };
}

export function statusAdaptor(st: IngestStatus): Adaptor {
  return (fp) => (fp[0] === "ref" && fp.length === 1 ? present(st.ref) : NOT_PRESENT);
}
