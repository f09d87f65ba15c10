/** The snapshotters of this process by name. */
import { errInvalidArgument, errNotFound } from "#libs/errdefs";
import type { Snapshotter, SnapshotterSet } from "#libs/core/snapshots";

export class LocalSnapshotterSet implements SnapshotterSet {
  constructor(private readonly byName: Map<string, Snapshotter>) {}
  get(name: string): Snapshotter {
    if (!name) throw errInvalidArgument("snapshotter argument missing");
    const s = this.byName.get(name);
    if (!s) throw errNotFound(`snapshotter not loaded: ${name}`);
    return s;
  }
  names(): string[] {
    return [...this.byName.keys()];
  }
}
