/**
 * Readiness for systemd (`Type=notify`): READY=1 on `$NOTIFY_SOCKET` once a process serves.
 * Node has no unix datagram sockets, and the one npm package for them (unix-dgram) is a native addon,
 * so the message goes through `systemd-notify` (Debian's systemd package). It is sent with `--pid` set
 * to this process, so systemd attributes it to the service's main PID even after systemd-notify has
 * exited; the units also say `NotifyAccess=all`, which covers a manager that looks at the sender.
 */
import { spawn } from "node:child_process";
import type { Logger } from "pino";

/** Tell the service manager this process is ready (a no-op outside systemd). Never throws. */
export function notifyReady(log: Logger, status = "serving"): void {
  const socket = process.env.NOTIFY_SOCKET;
  if (!socket) return;
  const child = spawn("systemd-notify", [`--pid=${process.pid}`, "--ready", `--status=${status}`], { stdio: ["ignore", "ignore", "pipe"] });
  let err = "";
  child.stderr.on("data", (b: Buffer) => (err += b.toString()));
  child.on("error", (e) => log.warn({ err: e }, "sd_notify: systemd-notify could not run"));
  child.on("exit", (code) => {
    if (code !== 0) log.warn({ code, stderr: err.trim() }, "sd_notify: systemd-notify failed");
    else log.debug({ socket }, "sd_notify: READY=1 sent");
  });
}
