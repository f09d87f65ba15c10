import { after } from "node:test";
import { snapshotterSuite } from "./suite";
import { localFixture } from "./fixtures";
import { closeChannels } from "../../libs/grpc/client";

snapshotterSuite("local overlayfs", () => localFixture("overlayfs"));
snapshotterSuite("local native", () => localFixture("native"));
after(() => closeChannels());
