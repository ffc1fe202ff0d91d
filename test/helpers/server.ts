// Starts `madmail serve` from the compiled binary on free loopback ports, with its own state
// file, and stops it by PID. Several can run side by side.
import { createServer } from "node:net";
import { sandbox, type Sandbox } from "./binary.ts";

/**
 * A loopback port nothing listens on: bind 127.0.0.1:0, read the port, close. The kernel may
 * hand the same port out twice in a row (seen: a server's HTTP and submission ports equal), so
 * a port given out in the last minute by this process is not given again.
 */
export async function freePort(): Promise<number> {
  for (;;) {
    const port = await new Promise<number>((resolve, reject) => {
      const s = createServer();
      s.unref();
      s.once("error", reject);
      s.listen(0, "127.0.0.1", () => {
        const port = (s.address() as { port: number }).port;
        s.close(() => resolve(port));
      });
    });
    const now = Date.now();
    for (const [p, at] of given) if (now - at > 60_000) given.delete(p);
    if (!given.has(port)) {
      given.set(port, now);
      return port;
    }
  }
}

const given = new Map<number, number>();

export interface ServerHandle {
  box: Sandbox;
  httpPort: number;
  smtpPort: number;
  lmtpPort: number;
  submissionPort: number;
  url: string;
  proc: ReturnType<typeof Bun.spawn>;
  /** Everything the server wrote to stderr so far. */
  logs(): string;
  stop(signal?: NodeJS.Signals): Promise<number>;
}

export interface StartOptions {
  box?: Sandbox;
  /** Commands run before start, e.g. [["domain","add","a.test"]], or { args, stdin }. */
  setup?: (string[] | { args: string[]; stdin: string })[];
  env?: Record<string, string>;
  extraArgs?: string[];
  /** The SMTP MX listener's HOST:PORT instead of a free port on 127.0.0.1 (e.g. port 25 of another loopback address). */
  smtp?: string;
}

export async function startServe(opts: StartOptions = {}): Promise<ServerHandle> {
  const box = opts.box ?? sandbox();
  for (const cmd of opts.setup ?? []) {
    const { args, stdin } = Array.isArray(cmd) ? { args: cmd, stdin: undefined } : cmd;
    const r = await box.run(args, { stdin });
    if (r.code !== 0) throw new Error(`setup ${args.join(" ")} failed: ${r.stderr}`);
  }
  const [httpPort, lmtpPort, submissionPort] = [await freePort(), await freePort(), await freePort()];
  const smtp = opts.smtp ?? `127.0.0.1:${await freePort()}`;
  const smtpHost = smtp.slice(0, smtp.lastIndexOf(":"));
  const smtpPort = Number(smtp.slice(smtp.lastIndexOf(":") + 1));
  const proc = Bun.spawn(
    [
      box.bin, "serve", "--http", `127.0.0.1:${httpPort}`, "--smtp", smtp, "--lmtp", `127.0.0.1:${lmtpPort}`,
      "--submission", `127.0.0.1:${submissionPort}`, "--submissions", "off", ...(opts.extraArgs ?? []),
    ],
    { cwd: box.dir, env: { PATH: process.env.PATH ?? "/usr/bin:/bin", NO_COLOR: "1", MADMAIL_DB: box.db, ...opts.env }, stdout: "ignore", stderr: "pipe" },
  );
  let stderr = "";
  (async () => {
    const dec = new TextDecoder();
    for await (const chunk of proc.stderr as ReadableStream<Uint8Array>) stderr += dec.decode(chunk);
  })();
  const url = `http://127.0.0.1:${httpPort}`;
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      const r = await fetch(`${url}/healthz`);
      if (r.ok) break;
    } catch {}
    if (proc.exitCode !== null || Date.now() > deadline) {
      proc.kill();
      throw new Error(`serve did not come up (exit ${proc.exitCode}): ${stderr}`);
    }
    await Bun.sleep(25);
  }
  // The SMTP listeners start after HTTP; wait for them too.
  for (const [host, port] of [[smtpHost, smtpPort], ["127.0.0.1", lmtpPort], ["127.0.0.1", submissionPort]] as const) {
    await waitForPort(port, { host, timeoutMs: Math.max(0, deadline - Date.now()), alive: () => proc.exitCode === null, what: "madmail serve" });
  }
  return {
    box, httpPort, smtpPort, lmtpPort, submissionPort, url, proc,
    logs: () => stderr,
    async stop(signal = "SIGTERM") {
      proc.kill(signal);
      return await proc.exited;
    },
  };
}

/** Waits until something accepts TCP connections on host (127.0.0.1):port; `what` names the process in errors. */
export async function waitForPort(port: number, o: { host?: string; timeoutMs: number; alive?: () => boolean; what?: string }): Promise<void> {
  const end = Date.now() + o.timeoutMs;
  const host = o.host ?? "127.0.0.1";
  for (;;) {
    try {
      const s = await Bun.connect({ hostname: host, port, socket: { data() {} } });
      s.end();
      return;
    } catch {
      if (o.alive && !o.alive()) throw new Error(`${o.what} exited during start-up`);
      if (Date.now() > end) throw new Error(`${o.what ? `${o.what}: ` : ""}nothing listens on ${host}:${port}`);
      await Bun.sleep(25);
    }
  }
}

/** POST /mxdeliv with envelope headers. */
export async function postMxdeliv(url: string, from: string, to: string[], body: string | Uint8Array, headers: Record<string, string> = {}): Promise<{ status: number; text: string }> {
  const h = new Headers({ "X-Mail-From": from, ...headers });
  for (const t of to) h.append("X-Mail-To", t);
  const r = await fetch(`${url}/mxdeliv`, { method: "POST", headers: h, body: body as BodyInit });
  return { status: r.status, text: await r.text() };
}

/** Polls `fn` every 50 ms until it returns something truthy; throws naming `what` after `ms`. */
export async function waitUntil<T>(what: string, fn: () => T | undefined | false | Promise<T | undefined | false>, ms = 30_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(50);
  }
}
