import { after } from "node:test";
import { snapshotterSuite } from "./suite";
import { proxyFixture } from "./fixtures";
import { closeChannels } from "../../libs/grpc/client";

snapshotterSuite("proxy over gRPC (overlayfs)", () => proxyFixture("overlayfs"));
snapshotterSuite("proxy over gRPC (native)", () => proxyFixture("native"));
after(() => closeChannels());
