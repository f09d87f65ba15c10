import { after } from "node:test";
import { imageStoreSuite } from "./suite";
import { leaseManagerSuite } from "./lease-suite";
import { proxyImagesFixture, proxyLeasesFixture } from "./fixtures";
import { testChannels } from "../harness";

imageStoreSuite("proxy over gRPC", proxyImagesFixture);
leaseManagerSuite("proxy over gRPC", proxyLeasesFixture);
after(() => testChannels.close());
