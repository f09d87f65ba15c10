import { after } from "node:test";
import { sandboxStoreSuite } from "./store-suite";
import { localStoreFixture, proxyStoreFixture } from "./fixtures";
import { testChannels } from "../harness";

sandboxStoreSuite("local", localStoreFixture);
sandboxStoreSuite("proxy over gRPC", proxyStoreFixture);
after(() => testChannels.close());
