/** The snapshots process: containerd.services.snapshots.v1.Snapshots and containerd.services.diff.v1.Diff. */
import { runService, type ServiceDefinition } from "#libs/service";
import { startSnapshots } from "./src/service";
import { SNAPSHOTS_COMPONENTS } from "./components";

export const snapshotsService: ServiceDefinition = { name: "snapshots", components: SNAPSHOTS_COMPONENTS, start: startSnapshots };

if (require.main?.filename === __filename) void runService(snapshotsService);
