/**
 * `node relay.js PORT`, run by the streaming server inside a pod's network namespace (nsenter --net):
 * connects to 127.0.0.1:PORT there and relays stdin -> socket -> stdout, half-closes included. It says
 * "connected" on stderr once the connection is up, or the dial error, exit status 1, when it fails.
 */
import * as net from "node:net";

function relay(port: number): void {
  const sock = net.connect({ host: "127.0.0.1", port, family: 4 });
  sock.once("connect", () => {
    process.stderr.write("connected\n");
    process.stdin.pipe(sock);
    sock.pipe(process.stdout);
  });
  sock.on("error", (e: NodeJS.ErrnoException) => {
    const why = e.code === "ECONNREFUSED" ? "connect: connection refused" : e.message;
    process.stderr.write(`dial tcp4 127.0.0.1:${port}: ${why}\n`);
    process.exit(1);
  });
  sock.on("close", () => process.stdout.end(() => process.exit(0)));
}

relay(Number(process.argv[2]));
