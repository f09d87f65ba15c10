import { after } from "node:test";
import { closeChannels } from "../../libs/grpc/client";
import { contentSuite } from "./suite";
import { proxyFixture } from "./fixtures";

contentSuite("proxy over gRPC", proxyFixture);
after(() => closeChannels());
