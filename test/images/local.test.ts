import { imageStoreSuite } from "./suite";
import { leaseManagerSuite } from "./lease-suite";
import { localImagesFixture, localLeasesFixture } from "./fixtures";

imageStoreSuite("local", localImagesFixture);
leaseManagerSuite("local", localLeasesFixture);
