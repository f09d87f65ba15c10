/**
 * Where `ctr run --rm` spends its time: a stack exporting OTEL spans to a local OTLP receiver, a few
 * runs, then every server span of each run on a timeline (start offset and duration, per process).
 * `MODE=rootfs` for --rootfs runs; `LEVEL=debug` also prints the tasks/shim step timings from the log.
 * `node dist/bench/tools/trace-tasks.js`
 */
import * as fs from "node:fs";
import * as http from "node:http";
import * as os from "node:os";
import * as path from "node:path";
import { startStack } from "#test/harness";
import { startRegistry } from "#test/helpers/registry";
import { buildBusyboxImage, pushImage } from "#test/helpers/image";
import { busyboxRootfs } from "#test/tasks/helpers";

interface S { service: string; name: string; kind: number; start: number; end: number; trace: string }

async function main(): Promise<void> {
  const spans: S[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const body = JSON.parse(Buffer.concat(chunks).toString("utf8"));
      for (const rs of body.resourceSpans ?? []) {
        const service = (rs.resource?.attributes ?? []).find((a: { key: string }) => a.key === "service.name")?.value?.stringValue ?? "";
        for (const ss of rs.scopeSpans ?? []) for (const s of ss.spans ?? []) spans.push({ service, name: s.name, kind: s.kind, start: Number(BigInt(s.startTimeUnixNano) / 1000n) / 1000, end: Number(BigInt(s.endTimeUnixNano) / 1000n) / 1000, trace: s.traceId });
      }
      res.writeHead(200, { "content-type": "application/json" }).end("{}");
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const endpoint = `http://127.0.0.1:${(server.address() as { port: number }).port}/v1/traces`;
  const reg = await startRegistry();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "flt-trace-"));
  const rootfs = busyboxRootfs(path.join(dir, "rootfs"));
  const st = await startStack({ logLevel: process.env.LEVEL ?? "warn", otlpEndpoint: endpoint, otlpProtocol: "http/json" });
  try {
    await pushImage(reg, "bench/busybox", "latest", buildBusyboxImage());
    const ref = `${reg.host}/bench/busybox:latest`;
    await st.ctr(["images", "pull", "--plain-http", ref], { namespace: "bench" });
    const mode = process.env.MODE ?? "image";
    for (let i = 0; i < 6; i++) {
      await new Promise((r) => setTimeout(r, 700));
      const t0 = Date.now();
      const args = mode === "image" ? ["run", "--rm", ref, `ri${i}`, "true"] : ["run", "--rm", "--env", "PATH=/bin", "--rootfs", rootfs, `rr${i}`, "true"];
      const r = await st.ctr(args, { namespace: "bench" });
      const t1 = Date.now();
      if (r.code) throw new Error(r.stderr);
      await new Promise((r) => setTimeout(r, 1200));
      if (i < 3) continue;
      console.log(`--- run ${i}: ${t1 - t0} ms`);
      const mine = spans.filter((s) => s.start >= t0 - 5 && s.start <= t1).sort((a, b) => a.start - b.start);
      for (const s of mine) if (s.kind === 2) console.log(`${(s.start - t0).toFixed(1).padStart(7)} ${(s.end - s.start).toFixed(1).padStart(7)}  ${s.service.padEnd(20)} ${s.name}`);
    }
    if (process.env.LEVEL) console.log(st.logs().split("\n").filter((l) => /created|task created|deleted|recycled|warm|released/.test(l)).slice(-40).join("\n"));
  } finally {
    await st.stop();
    await reg.stop();
    server.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
main().catch((e) => { console.error(e); process.exit(1); });
