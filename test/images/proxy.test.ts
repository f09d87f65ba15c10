import { after } from "node:test";
import { closeChannels } from "../../libs/grpc/client";
import { imageStoreSuite } from "./suite";
import { leaseManagerSuite } from "./lease-suite";
import { proxyImagesFixture, proxyLeasesFixture } from "./fixtures";

imageStoreSuite("proxy over gRPC", proxyImagesFixture);
leaseManagerSuite("proxy over gRPC", proxyLeasesFixture);
after(() => closeChannels());
