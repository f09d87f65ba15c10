/** Filter adaptors: images (`name`, `target.digest`, `target.mediatype`, `labels.<k>`, `annotations.<k>`) and leases (`id`, `labels.<k>`). */
import { mapField, NOT_PRESENT, present, type Adaptor } from "#libs/filters";
import type { Image } from "#libs/core/images";
import type { Lease } from "#libs/core/leases";

const nonEmpty = (v: string): { value: string; present: boolean } => (v ? present(v) : NOT_PRESENT);

export function imageAdaptor(img: Image): Adaptor {
  return (fp) => {
    switch (fp[0]) {
      case "name": return nonEmpty(img.name);
      case "target":
        if (fp[1] === "digest") return nonEmpty(img.target.digest);
        if (fp[1] === "mediatype") return nonEmpty(img.target.mediaType);
        return NOT_PRESENT;
      case "labels": return mapField(img.labels, fp.slice(1));
      case "annotations": return mapField(img.target.annotations, fp.slice(1));
      default: return NOT_PRESENT;
    }
  };
}

export function leaseAdaptor(l: Lease): Adaptor {
  return (fp) => {
    switch (fp[0]) {
      case "id": return nonEmpty(l.id);
      case "labels": return mapField(l.labels, fp.slice(1));
      default: return NOT_PRESENT;
    }
  };
}
