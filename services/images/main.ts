/** The images process: the metadata owner (namespaces, images, leases) and the garbage collector. */
import { runService } from "#libs/service";
import { imagesService } from "./src/service";

export { imagesService };

if (require.main?.filename === __filename) void runService(imagesService);
