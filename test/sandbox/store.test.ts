import { after } from "node:test";
import { closeChannels } from "../../libs/grpc/client";
import { sandboxStoreSuite } from "./store-suite";
import { localStoreFixture, proxyStoreFixture } from "./fixtures";

sandboxStoreSuite("local", localStoreFixture);
sandboxStoreSuite("proxy over gRPC", proxyStoreFixture);
after(() => closeChannels());
