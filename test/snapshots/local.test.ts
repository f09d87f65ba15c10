import { after } from "node:test";
import { snapshotterSuite } from "./suite";
import { localFixture } from "./fixtures";
import { testChannels } from "../harness";

snapshotterSuite("local overlayfs", () => localFixture("overlayfs"));
snapshotterSuite("local native", () => localFixture("native"));
after(() => testChannels.close());
