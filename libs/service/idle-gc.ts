/**
 * Give memory back once a burst of work is over (issue 17). V8 collects when allocation needs room, so a
 * process that goes quiet after work (a pull's Buffers, HTTP/2 frames, decoded messages) keeps that garbage,
 * and the malloc'd memory behind its Buffers, for as long as it stays quiet: measured after a pull and
 * 5 `ctr run --rm`, the seven services held 351 MiB PSS, 262 MiB after one full GC each, and 212 MiB
 * once glibc's malloc was also asked to return its free memory (malloc_trim: the gateway 77 -> 29 MiB,
 * content 63 -> 32 MiB).
 *
 * Every `checkMs` this looks at the V8 heap in use plus external memory, and at the resident set size
 * (cheap: no GC; the RSS is one read of /proc/self/statm). When either has grown by more than `growthBytes`
 * since the last collection made here, and neither barely moved since the previous look (the burst is
 * over), it runs one full GC, then malloc_trim. The RSS matters on its own: native memory (HTTP/2 session
 * buffers, the stream machinery's) grows glibc's heap without showing in V8's numbers; after a second
 * pull the gateway and the content process each held ~9 MiB of free malloc heap that only a trim returns.
 * A busy process is left to V8's own scheduling.
 */
import * as v8 from "node:v8";
import * as vm from "node:vm";
import { mallocTrim } from "../sys/linux";

export interface IdleGcOptions {
  checkMs?: number;
  growthBytes?: number;
  /** Allocation between two looks below which the process counts as quiet. */
  quietBytes?: number;
}

const MiB = 1024 * 1024;

function inUse(): number {
  const h = v8.getHeapStatistics() as v8.HeapInfo & { external_memory?: number };
  return h.used_heap_size + (h.external_memory ?? 0);
}

/** Start the idle collector; returns a function that stops it. */
export function startIdleGc(opts: IdleGcOptions = {}): () => void {
  const checkMs = opts.checkMs ?? 2000;
  const growth = opts.growthBytes ?? 4 * MiB;
  const quiet = opts.quietBytes ?? 1 * MiB;
  // `gc` without --expose-gc on the command line: the flag set now is seen by a context made after it.
  // The flag is turned off again at once: `gc` stays usable, and V8's flag hash goes back to what it
  // was, so the code cache the process writes for its bundle (scripts/bundle.js) matches the next start.
  v8.setFlagsFromString("--expose-gc");
  const gc = vm.runInNewContext("gc") as () => void;
  v8.setFlagsFromString("--no-expose-gc");
  const rss = (): number => process.memoryUsage.rss();
  let base = inUse();
  let last = base;
  let rssBase = rss();
  let rssLast = rssBase;
  const t = setInterval(() => {
    const now = inUse();
    const r = rss();
    const still = Math.abs(now - last) < quiet && Math.abs(r - rssLast) < quiet;
    if (still && (now - base > growth || r - rssBase > growth)) {
      gc();
      // The Buffers it freed went back to malloc, which keeps most of them unless asked to trim.
      mallocTrim();
      base = last = inUse();
      rssBase = rssLast = rss();
      return;
    }
    if (now < base) base = now;
    if (r < rssBase) rssBase = r;
    last = now;
    rssLast = r;
  }, checkMs);
  t.unref();
  return () => clearInterval(t);
}
