import { after } from "node:test";
import { snapshotterSuite } from "./suite";
import { proxyFixture } from "./fixtures";
import { testChannels } from "../harness";

snapshotterSuite("proxy over gRPC (overlayfs)", () => proxyFixture("overlayfs"));
snapshotterSuite("proxy over gRPC (native)", () => proxyFixture("native"));
after(() => testChannels.close());
