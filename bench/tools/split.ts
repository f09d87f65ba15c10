/**
 * Issue 15: what the split costs. `ctr images pull` (of an image just removed) and `ctr run --rm`
 * on the stack split over two network+mount namespaces with mutual TLS (test/split/stack.ts), on one
 * host as `up` runs it (shortcuts on, unix sockets) and on one host with every shortcut off,
 * interleaved round by round; prints the medians and the split/one-host ratios.
 * `node dist/bench/tools/split.js [N]` (as root; default 9 rounds after 1 warm-up).
 */
import { startStack, type Stack } from "#test/harness";
import { buildBusyboxImage, pushImage } from "#test/helpers/image";
import { startRegistry } from "#test/helpers/registry";
import { median, startSplitStack, timeOnce, type Ctr, type SplitStack } from "#test/split/stack";

async function main(): Promise<void> {
  const n = Number(process.argv[2] ?? 9);
  const reg = await startRegistry();
  const stacks: Stack[] = [];
  let split: SplitStack | undefined;
  try {
    await pushImage(reg, "bench/busybox", "latest", buildBusyboxImage());
    const ref = `${reg.host}/bench/busybox:latest`;
    split = await startSplitStack();
    stacks.push(await startStack());
    stacks.push(await startStack({ readViews: false, flotillaToml: ["gateway_content_reads = false"], extraToml: '[plugins."io.containerd.differ.v1.walking"]\nlocal_content_reads = false' }));
    const one = (s: Stack): Ctr => (a, o) => s.ctr(a, o);
    const targets: { name: string; ctr: Ctr; node: Ctr }[] = [
      { name: "split (2 hosts, mTLS)", ctr: split.ctr, node: split.node },
      { name: "one host", ctr: one(stacks[0]!), node: one(stacks[0]!) },
      { name: "one host, shortcuts off", ctr: one(stacks[1]!), node: one(stacks[1]!) },
    ];
    const times = targets.map(() => ({ pull: [] as number[], run: [] as number[] }));
    for (let i = 0; i < n + 1; i++) {
      for (let k = 0; k < targets.length; k++) {
        const t = await timeOnce(targets[k]!.ctr, targets[k]!.node, ref, `bench-${i}`);
        if (i === 0) continue;
        times[k]!.pull.push(t.pull);
        times[k]!.run.push(t.run);
      }
    }
    const med = times.map((t) => ({ pull: median(t.pull), run: median(t.run) }));
    for (let k = 0; k < targets.length; k++) {
      process.stdout.write(`${targets[k]!.name.padEnd(26)} ctr images pull ${med[k]!.pull.toFixed(0).padStart(5)} ms   ctr run --rm ${med[k]!.run.toFixed(0).padStart(5)} ms   (medians of ${n})\n`);
    }
    for (const k of [1, 2]) {
      process.stdout.write(`split / ${targets[k]!.name}: pull ${(med[0]!.pull / med[k]!.pull).toFixed(2)}, run --rm ${(med[0]!.run / med[k]!.run).toFixed(2)}\n`);
    }
  } finally {
    for (const s of stacks) await s.stop();
    await split?.stop();
    await reg.stop();
  }
}

main().then(() => process.exit(0), (e: unknown) => {
  process.stderr.write(`${(e as Error).stack ?? String(e)}\n`);
  process.exit(1);
});
