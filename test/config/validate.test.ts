/**
 * The config is checked against the schemas of what reads it: a wrong type or an unknown key is a
 * start-up error naming the key with its table path (from `flotilla up` before any process starts, and
 * from a process started alone); containerd's own keys and the tables of plugins Flotilla does not
 * implement (containerd's CRI tables) are accepted, the latter with one warning.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { parse as parseToml, stringify as stringifyToml } from "smol-toml";
import { fromToml, loadConfig } from "#libs/config";
import { repoRoot } from "#libs/proto";
import { checkConfig } from "#cli/components";
import { startStack } from "../harness";

function withConfig<T>(toml: string, fn: (file: string, dir: string) => T): T {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "flt-cfg-"));
  try {
    const file = path.join(dir, "config.toml");
    fs.writeFileSync(file, `version = 2\nroot = ${JSON.stringify(path.join(dir, "root"))}\nstate = ${JSON.stringify(path.join(dir, "state"))}\n${toml}\n`);
    return fn(file, dir);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** The whole check `flotilla up` makes: the file, then every plugin table Flotilla implements. */
const check = (toml: string): string[] => withConfig(toml, (file) => checkConfig(loadConfig(file)));
const failure = (toml: string): string =>
  withConfig(toml, (file) => {
    try {
      checkConfig(loadConfig(file));
    } catch (e) {
      return (e as Error).message.replace(file, "FILE");
    }
    return assert.fail(`accepted:\n${toml}`);
  });

/** `containerd config default` of the installed containerd (Debian's 1.6). */
function containerdDefault(): string {
  const r = spawnSync("containerd", ["config", "default"], { encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout;
}

test("config: a value of the wrong type names the key with its full table path", () => {
  assert.equal(
    failure('[plugins."io.containerd.gc.v1.scheduler"]\npause_threshold = "0.1"'),
    'config FILE: [plugins."io.containerd.gc.v1.scheduler"] pause_threshold: expected a number, got string: invalid argument',
  );
  assert.equal(failure("oom_score = \"high\""), "config FILE: oom_score: expected an integer, got string: invalid argument");
  assert.equal(failure("[grpc]\nmax_recv_message_size = 1.5"), "config FILE: [grpc] max_recv_message_size: expected an integer, got float: invalid argument");
  assert.equal(failure("[flotilla.nats]\nurl = 4222"), "config FILE: [flotilla.nats] url: expected a string or a list of strings, got integer: invalid argument");
  assert.equal(failure('[plugins."io.containerd.gc.v1.scheduler"]\nschedule_delay = "soon"'), 'config FILE: [plugins."io.containerd.gc.v1.scheduler"] schedule_delay: expected a duration (e.g. "100ms", "1s"), got "soon": invalid argument');
  assert.equal(failure('[plugins."io.containerd.gc.v1.scheduler"]\nstartup_delay = 100'), 'config FILE: [plugins."io.containerd.gc.v1.scheduler"] startup_delay: expected a duration (e.g. "100ms", "1s"), got integer: invalid argument');
  assert.equal(
    failure('[plugins."io.containerd.runtime.v2.task".runtimes."io.containerd.crun.v2"]\nshim = "flotilla"\nruntime_args = ["--cgroup-manager=disabled", 1]'),
    'config FILE: [plugins."io.containerd.runtime.v2.task".runtimes."io.containerd.crun.v2"] runtime_args[1]: expected a string, got integer: invalid argument',
  );
  assert.equal(failure('[plugins."io.containerd.runtime.v2.task"]\nwarm_shims = 17'), 'config FILE: [plugins."io.containerd.runtime.v2.task"] warm_shims: 17 is out of range (0 to 16): invalid argument');
  assert.equal(failure('[plugins."io.containerd.podsandbox.controller.v1.podsandbox"]\ncni_bin_dir = 7'), 'config FILE: [plugins."io.containerd.podsandbox.controller.v1.podsandbox"] cni_bin_dir: expected a string or a list of strings, got integer: invalid argument');
  assert.equal(failure('[plugins."io.containerd.transfer.v1.local"]\nmax_concurrent_downloads = "3"'), 'config FILE: [plugins."io.containerd.transfer.v1.local"] max_concurrent_downloads: expected an integer, got string: invalid argument');
  assert.equal(failure('[plugins."io.containerd.differ.v1.walking"]\nallow_devices = "no"'), 'config FILE: [plugins."io.containerd.differ.v1.walking"] allow_devices: expected a boolean, got string: invalid argument');
  assert.equal(failure("[flotilla]\notlp_protocol = \"grpc\""), 'config FILE: [flotilla] otlp_protocol: expected one of "http/protobuf", "http/json", got "grpc": invalid argument');
  assert.equal(failure("[flotilla]\nservices = 1"), "config FILE: [flotilla] services: expected a table, got integer: invalid argument");
});

test('config: the gateway flags are booleans: the string "false" is an error, not a feature turned on', () => {
  assert.equal(failure('[flotilla]\ngateway_content_reads = "false"'), "config FILE: [flotilla] gateway_content_reads: expected a boolean, got string: invalid argument");
  assert.equal(failure('[flotilla]\ngateway_read_views = "false"'), "config FILE: [flotilla] gateway_read_views: expected a boolean, got string: invalid argument");
  withConfig("[flotilla]\ngateway_content_reads = false\ngateway_read_views = false", (file) => {
    const c = loadConfig(file);
    assert.equal(c.flotilla.gateway_content_reads, false);
    assert.equal(c.flotilla.gateway_read_views, false);
  });
  withConfig("", (file) => {
    const c = loadConfig(file);
    assert.equal(c.flotilla.gateway_content_reads, true);
    assert.equal(c.flotilla.gateway_read_views, true);
  });
});

test("config: an unknown key in a known table is an error; a plugin table of a plugin that takes no config too", () => {
  assert.equal(failure("[flotilla]\ngateway_reads = true"), "config FILE: [flotilla] gateway_reads: unknown key: invalid argument");
  assert.equal(failure("[flotilla.services.content]\nadress = \"unix:///x.sock\""), "config FILE: [flotilla.services.content] adress: unknown key: invalid argument");
  assert.equal(failure("[flotilla.services.registry]\naddress = \"unix:///x.sock\""), "config FILE: [flotilla.services] registry: unknown key: invalid argument");
  assert.equal(failure("colour = \"blue\""), "config FILE: colour: unknown key: invalid argument");
  assert.equal(failure("[grpc]\nadress = \"/x.sock\""), "config FILE: [grpc] adress: unknown key: invalid argument");
  assert.equal(failure('[plugins."io.containerd.gc.v1.scheduler"]\npause = 0.1'), 'config FILE: [plugins."io.containerd.gc.v1.scheduler"] pause: unknown key: invalid argument');
  assert.equal(failure('[plugins."io.containerd.runtime.v2.task".runtimes."x.y"]\nshim = "/bin/x"\nruntime_type = "io.containerd.runc.v2"'), 'config FILE: [plugins."io.containerd.runtime.v2.task".runtimes."x.y"] runtime_type: unknown key: invalid argument');
  assert.equal(failure('[plugins."io.containerd.grpc.v1.tasks"]\nfoo = 1'), 'config FILE: [plugins."io.containerd.grpc.v1.tasks"] foo: unknown key: invalid argument');
  assert.equal(failure('[plugins.cri]\nfoo = 1'), "config FILE: [plugins] cri: not a plugin URI (io.containerd.<type>.<version>.<id>): invalid argument");
  // containerd's version 1 layout is refused as a whole (withConfig writes version 2 first: a second one is a TOML error).
  assert.throws(() => fromToml({ version: 1, plugins: { cri: {} } }, "/x.toml"), (e: Error) => /^config \/x\.toml: version: unsupported version 1: invalid argument$/.test(e.message));
});

test("config: containerd's own config (`containerd config default`) is accepted; the plugins Flotilla does not implement are reported", () => {
  const ctd = parseToml(containerdDefault()) as Record<string, unknown>;
  // Its paths are containerd's: keep them out of the way, everything else as containerd wrote it.
  delete ctd.root;
  delete ctd.state;
  delete ctd.version;
  const ignored = check(stringifyToml(ctd));
  assert.ok(ignored.includes("io.containerd.metadata.v1.bolt"), ignored.join(" "));
  for (const implemented of ["io.containerd.grpc.v1.cri", "io.containerd.gc.v1.scheduler", "io.containerd.runtime.v2.task", "io.containerd.snapshotter.v1.overlayfs", "io.containerd.service.v1.diff-service"]) {
    assert.ok(!ignored.includes(implemented), implemented);
  }
  // `flotilla config check` says the same.
  withConfig(stringifyToml(ctd), (file) => {
    const r = spawnSync(process.execPath, [path.join(repoRoot(), "bin", "flotilla"), "config", "check", "--config", file], { encoding: "utf8", timeout: 60000 });
    assert.equal(r.status, 0, r.stderr);
    assert.ok(r.stdout.includes(`config ${file}: ignoring [plugins."io.containerd.metadata.v1.bolt"]: not a plugin of Flotilla\n`), r.stdout);
    assert.ok(r.stdout.endsWith(`config ${file}: ok\n`), r.stdout);
  });
  // The shipped configurations hold no table Flotilla ignores.
  for (const f of ["deploy/flotilla.toml", "deploy/systemd/config.toml", "deploy/compose/config.toml"]) assert.deepEqual(checkConfig(loadConfig(path.join(repoRoot(), f))), [], f);
});

test("config: `flotilla up -c BAD` fails before starting anything, the message on stderr, and a process started alone does the same", () => {
  withConfig('[plugins."io.containerd.gc.v1.scheduler"]\npause_threshold = "0.1"', (file, dir) => {
    const up = spawnSync(process.execPath, [path.join(repoRoot(), "bin", "flotilla"), "up", "-c", file], { encoding: "utf8", timeout: 60000 });
    assert.equal(up.status, 1, up.stderr);
    assert.match(up.stderr, /\[plugins\."io\.containerd\.gc\.v1\.scheduler"\] pause_threshold: expected a number, got string/);
    assert.ok(up.stderr.includes(`config ${file}:`), up.stderr);
    assert.equal(fs.existsSync(path.join(dir, "state", "supervisor.json")), false, "no process was started");

    // The images process (the one that reads the table), as systemd starts it.
    const images = spawnSync(process.execPath, [path.join(repoRoot(), "dist", "services", "images", "main.js"), "--config", file], { encoding: "utf8", timeout: 60000 });
    assert.equal(images.status, 1, images.stderr);
    assert.match(images.stderr, /^flotilla-images: config .*: \[plugins\."io\.containerd\.gc\.v1\.scheduler"\] pause_threshold: expected a number, got string/m);
    assert.equal(fs.existsSync(path.join(dir, "root", "images")), false, "it stopped before making its directories");
  });
  withConfig('[plugins."io.containerd.gc.v1.scheduler"]\npause_threshold = "0.1"', (file) => {
    const check = spawnSync(process.execPath, [path.join(repoRoot(), "bin", "flotilla"), "config", "check", "-c", file], { encoding: "utf8", timeout: 60000 });
    assert.equal(check.status, 1, check.stderr);
    assert.equal(check.stderr, `flotilla config: config ${file}: [plugins."io.containerd.gc.v1.scheduler"] pause_threshold: expected a number, got string: invalid argument\n`);
  });
  withConfig('[flotilla]\ngateway_read_views = "false"', (file) => {
    const up = spawnSync(process.execPath, [path.join(repoRoot(), "bin", "flotilla"), "up", "--config", file], { encoding: "utf8", timeout: 60000 });
    assert.equal(up.status, 1, up.stderr);
    assert.match(up.stderr, /\[flotilla\] gateway_read_views: expected a boolean, got string/);
  });
});

test("config: a stack runs with containerd's plugin tables appended, warning once about those it ignores", async () => {
  const ctd = parseToml(containerdDefault()) as Record<string, unknown>;
  const stack = await startStack({ logLevel: "warn", extraToml: stringifyToml({ plugins: ctd.plugins as Record<string, unknown> }) });
  try {
    const warnings = stack.logs().split("\n").filter((l) => l.includes("ignoring the config of plugins Flotilla does not implement"));
    assert.equal(warnings.length, 1, stack.logs().slice(-3000));
    assert.match(warnings[0]!, /plugins\.\\"io\.containerd\.metadata\.v1\.bolt\\"/);
    const plugins = await stack.ctr(["plugins", "ls"]);
    assert.equal(plugins.code, 0, plugins.stderr);
    assert.match(plugins.stdout, /io\.containerd\.gc\.v1\s+scheduler\s+-\s+ok/);
    assert.match(plugins.stdout, /io\.containerd\.service\.v1\s+diff-service\s+-\s+ok/);
    assert.doesNotMatch(plugins.stdout, /metadata\.v1\s+bolt/, "an ignored plugin is not listed");
  } finally {
    await stack.stop();
  }
});
