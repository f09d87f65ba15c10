import { contentSuite } from "./suite";
import { localFixture } from "./fixtures";

contentSuite("local", localFixture);
