/**
 * `flotilla certs init DIR [--host NAME|IP]...`: a CA and one certificate per process (and one for
 * clients), made with Debian's `openssl` binary. Each certificate is good for both ends of a
 * connection (serverAuth and clientAuth): every process serves its own API and dials its peers.
 */
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as net from "node:net";
import * as path from "node:path";
import { parseArgs } from "node:util";
import { SERVICE_NAMES } from "../libs/config";

/**
 * Whom `certs init` makes a certificate for: each process, `client` for ctr-like clients and tests,
 * and `nats` for a nats-server run with TLS (its clients, the processes, present `client`'s).
 */
export const CERT_SUBJECTS = [...SERVICE_NAMES, "client", "nats"] as const;

const USAGE = "usage: flotilla certs init DIR [--host NAME|IP]... [--days N]\n";

function openssl(args: string[], cwd: string): void {
  execFileSync("openssl", args, { cwd, stdio: ["ignore", "ignore", "pipe"] });
}

const newKey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];

/** `subjectAltName` for localhost, 127.0.0.1 and each extra host (an IP literal as IP, else DNS). */
export function subjectAltNames(hosts: readonly string[]): string {
  const all = [...new Set(["localhost", "127.0.0.1", ...hosts])];
  return all.map((h) => (net.isIP(h.replace(/^\[|\]$/g, "")) ? `IP:${h.replace(/^\[|\]$/g, "")}` : `DNS:${h}`)).join(",");
}

/** Write ca.pem, ca-key.pem and `<name>.pem`, `<name>-key.pem` for every subject into `dir`. */
export function initCerts(dir: string, hosts: readonly string[], days = 825): string[] {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const written: string[] = [];
  const caKey = path.join(dir, "ca-key.pem");
  if (!fs.existsSync(caKey)) {
    openssl(["req", "-x509", ...newKey, "-keyout", "ca-key.pem", "-out", "ca.pem", "-days", String(days + 365), "-subj", "/CN=flotilla-ca",
      "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"], dir);
    written.push(path.join(dir, "ca.pem"), caKey);
  }
  const ext = path.join(dir, ".ext.cnf");
  fs.writeFileSync(ext, [
    "basicConstraints=CA:FALSE",
    "keyUsage=critical,digitalSignature,keyEncipherment",
    "extendedKeyUsage=serverAuth,clientAuth",
    `subjectAltName=${subjectAltNames(hosts)}`,
    "",
  ].join("\n"));
  try {
    for (const name of CERT_SUBJECTS) {
      const csr = `${name}.csr`;
      openssl(["req", "-new", ...newKey, "-keyout", `${name}-key.pem`, "-out", csr, "-subj", `/CN=flotilla-${name}`], dir);
      openssl(["x509", "-req", "-in", csr, "-CA", "ca.pem", "-CAkey", "ca-key.pem", "-CAcreateserial", "-days", String(days), "-extfile", ext, "-out", `${name}.pem`], dir);
      fs.rmSync(path.join(dir, csr));
      written.push(path.join(dir, `${name}.pem`), path.join(dir, `${name}-key.pem`));
    }
  } finally {
    fs.rmSync(ext, { force: true });
  }
  for (const f of fs.readdirSync(dir)) if (f.endsWith("-key.pem")) fs.chmodSync(path.join(dir, f), 0o600);
  return written;
}

/** The config lines that use the certificates in `dir`. */
export function tlsConfigLines(dir: string): string {
  const f = (n: string): string => JSON.stringify(path.join(dir, n));
  const lines = ["[flotilla.tls]", `  ca = ${f("ca.pem")}`, `  cert = ${f("client.pem")}   # what \`flotilla\` commands and the supervisor dial with`, `  key = ${f("client-key.pem")}`];
  for (const s of SERVICE_NAMES) lines.push(`[flotilla.services.${s}]`, `  tls_cert = ${f(`${s}.pem`)}`, `  tls_key = ${f(`${s}-key.pem`)}`);
  lines.push(`[flotilla.nats]   # with url = "nats://HOST:4222" of a nats-server serving nats.pem with TLS (see README)`, `  tls_ca = ${f("ca.pem")}`, `  tls_cert = ${f("client.pem")}`, `  tls_key = ${f("client-key.pem")}`);
  lines.push(`[grpc]   # merge into your [grpc] table: the gateway's extra TCP listener (tcp_address = "HOST:PORT"), as in containerd`, `  tcp_tls_ca = ${f("ca.pem")}`, `  tcp_tls_cert = ${f("gateway.pem")}`, `  tcp_tls_key = ${f("gateway-key.pem")}`);
  return lines.join("\n") + "\n";
}

export async function certsCommand(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({ args: argv, allowPositionals: true, strict: true, options: { host: { type: "string", multiple: true }, days: { type: "string" }, config: { type: "string", short: "c" }, address: { type: "string", short: "a" }, namespace: { type: "string", short: "n" } } });
  } catch (e) {
    process.stderr.write(`flotilla certs: ${(e as Error).message}\n${USAGE}`);
    return 1;
  }
  const [sub, dir, ...extra] = parsed.positionals;
  const days = parsed.values.days === undefined ? 825 : Number(parsed.values.days);
  if (sub !== "init" || !dir || extra.length || !Number.isInteger(days) || days < 1) {
    process.stderr.write(USAGE);
    return 1;
  }
  const abs = path.resolve(dir);
  try {
    for (const f of initCerts(abs, parsed.values.host ?? [], days)) process.stdout.write(`wrote ${f}\n`);
  } catch (e) {
    const err = e as Error & { stderr?: Buffer };
    process.stderr.write(`flotilla certs: openssl failed: ${err.stderr?.toString().trim() || err.message}\n`);
    return 1;
  }
  process.stdout.write(`\nAdd to the config (each [flotilla.services.X] also takes address = "tcp://HOST:PORT" and advertise_address):\n\n${tlsConfigLines(abs)}`);
  return 0;
}
