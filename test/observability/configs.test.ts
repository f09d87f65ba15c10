/** Every process of the shipped configurations serves Prometheus metrics, each on its own address. */
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { test } from "node:test";
import { loadConfig, SERVICE_NAMES } from "#libs/config";
import { repoRoot } from "#libs/proto";

for (const file of ["deploy/flotilla.toml", "deploy/systemd/config.toml", "deploy/compose/config.toml"]) {
  test(`${file}: a metrics_address for every process`, () => {
    const cfg = loadConfig(path.join(repoRoot(), file));
    const addresses = SERVICE_NAMES.map((s) => cfg.flotilla.services[s].metrics_address);
    for (const [i, a] of addresses.entries()) assert.match(a, /^[\d.]+:\d+$/, `${SERVICE_NAMES[i]}: ${JSON.stringify(a)}`);
    assert.equal(new Set(addresses).size, SERVICE_NAMES.length, `distinct: ${addresses.join(" ")}`);
    assert.equal(cfg.flotilla.services.gateway.metrics_address, cfg.metrics.address, "the gateway's is [metrics] address, as containerd's");
    assert.equal(cfg.flotilla.otlp_protocol, "http/protobuf");
  });
}

test("[flotilla] otlp_protocol: http/protobuf (the default) or http/json, nothing else", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "flt-otlp-"));
  try {
    const load = (v: string): string => {
      fs.writeFileSync(path.join(dir, "c.toml"), `version = 2\n[flotilla]\n${v}\n`);
      return loadConfig(path.join(dir, "c.toml")).flotilla.otlp_protocol;
    };
    assert.equal(load(""), "http/protobuf");
    assert.equal(load('otlp_protocol = "http/json"'), "http/json");
    assert.throws(() => load('otlp_protocol = "grpc"'), /\[flotilla\] otlp_protocol: expected one of "http\/protobuf", "http\/json", got "grpc"/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
