// madmail serve and npm start: GET /healthz, and SIGTERM / SIGINT stop it within a second.
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { symlinkSync } from "node:fs";
import { join, resolve } from "node:path";
import pkg from "../../package.json" with { type: "json" };
import { migrations } from "../../src/db/migrations/index.ts";
import { binaryCopy, sandbox, type Sandbox } from "../helpers/binary.ts";

const REPO = resolve(import.meta.dir, "../..");
binaryCopy(); // copied before `npm start` below may rebuild dist/madmail

let sb: Sandbox;
let port: number;
const started: Bun.Subprocess[] = [];
beforeEach(async () => {
  sb = sandbox();
  port = freePort();
  // Only the HTTP listener: the others would take fixed default ports.
  for (const l of ["smtp", "submission", "submissions", "lmtp"]) {
    expect((await sb.run(["config", "set", `listen.${l}`, "off"])).code).toBe(0);
  }
});
afterEach(() => {
  // The whole group: a child can outlive its npm parent (see the SIGTERM test below).
  for (const p of started.splice(0)) {
    try {
      process.kill(-p.pid, "SIGKILL");
    } catch {} // ESRCH: the group is already gone
  }
  sb.cleanup();
});

function freePort(): number {
  const s = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const p = s.port;
  s.stop(true);
  return p;
}

/** Starts a command in its own process group (so a whole npm tree can be signalled), stderr captured. */
function start(cmd: string[], cwd = sb.dir): Bun.Subprocess<"ignore", "pipe", "pipe"> {
  const proc = Bun.spawn(cmd, {
    cwd,
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: sb.dir, NO_COLOR: "1", MADMAIL_DB: sb.db },
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
    detached: true,
  });
  started.push(proc);
  return proc;
}

async function healthz(timeoutMs: number): Promise<Response> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await fetch(`http://127.0.0.1:${port}/healthz`);
    } catch (err) {
      if (Date.now() > until) throw err;
      await Bun.sleep(25);
    }
  }
}

const reachable = () => fetch(`http://127.0.0.1:${port}/healthz`).then(() => true, () => false);

/** Sends sig and returns how long the process took to exit, in ms. */
async function stopTime(proc: Bun.Subprocess, sig: NodeJS.Signals, target = proc.pid): Promise<number> {
  const t0 = performance.now();
  process.kill(target, sig);
  await Promise.race([proc.exited, Bun.sleep(5000)]);
  return performance.now() - t0;
}

describe("madmail serve", () => {
  test.each(["SIGTERM", "SIGINT"] as const)("answers /healthz on --http and stops on %s within a second", async (sig) => {
    const proc = start([sb.bin, "serve", "--http", `127.0.0.1:${port}`]);
    const res = await healthz(10_000);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toStartWith("application/json");
    const body = await res.json();
    expect(body).toMatchObject({ status: "ok", version: pkg.version, schema_version: migrations.length });
    expect(typeof body.uptime_s).toBe("number");

    // An idle client connection must not hold the shutdown up.
    const idle = await Bun.connect({ hostname: "127.0.0.1", port, socket: { data() {} } });
    expect(await stopTime(proc, sig)).toBeLessThan(1000);
    idle.end();
    expect(proc.exitCode).toBe(0);
    expect(await new Response(proc.stderr).text()).toContain(`${sig}: shutting down`);
    expect(await reachable()).toBe(false);
  });

  test("listens where the listen.http setting says when no flag is given", async () => {
    expect((await sb.run(["config", "set", "listen.http", `127.0.0.1:${port}`])).code).toBe(0);
    const proc = start([sb.bin, "serve"]);
    expect((await healthz(10_000)).status).toBe(200);
    expect(await stopTime(proc, "SIGTERM")).toBeLessThan(1000);
  });

  test("an unknown path is 404", async () => {
    const proc = start([sb.bin, "serve", "--http", `127.0.0.1:${port}`]);
    await healthz(10_000);
    expect((await fetch(`http://127.0.0.1:${port}/nope`)).status).toBe(404);
    await stopTime(proc, "SIGTERM");
  });

  test.each(["8080", "localhost", "1.2.3.4:99999"])("--http %p is a usage error", async (addr) => {
    expect(await sb.run(["serve", "--http", addr])).toEqual({
      code: 2,
      stdout: "",
      stderr: `madmail: invalid --http "${addr}": expected HOST:PORT (e.g. 127.0.0.1:8080) or off\n`,
    });
  });

  // srvx's Bun adapter throws from serve() itself when the port is taken, before ready(): the
  // server is created inside listenOrExplain's callback so that this is explained too.
  test("a port in use exits 1 naming the address, without a stack trace", async () => {
    const blocker = Bun.listen({ hostname: "127.0.0.1", port, socket: { data() {} } });
    try {
      const r = await sb.run(["serve", "--http", `127.0.0.1:${port}`]);
      expect(r.code).toBe(1);
      expect(r.stderr).toStartWith(`madmail: cannot listen on 127.0.0.1:${port}`);
      expect(r.stderr).not.toContain("internal error");
      expect(r.stderr).not.toContain("    at ");
    } finally {
      blocker.stop(true);
    }
  });

  test("one server per state file: a second exits 1 naming the first; after kill -9 of the first a new one starts", async () => {
    const first = start([sb.bin, "serve", "--http", `127.0.0.1:${port}`]);
    await healthz(10_000);
    const other = freePort();
    const second = await sb.run(["serve", "--http", `127.0.0.1:${other}`]);
    expect(second).toEqual({
      code: 1,
      stdout: "",
      stderr: `madmail: another madmail serve (pid ${first.pid}) is running on ${sb.db}; one server per state file (its lock: ${sb.db}-serve.lock)\n`,
    });
    // The same file by another name (a symlink) is the same state file.
    const alias = join(sb.dir, "alias.db");
    symlinkSync(sb.db, alias);
    const third = await sb.run(["serve", "--http", `127.0.0.1:${other}`, "--db", alias]);
    expect(third.code).toBe(1);
    expect(third.stderr).toContain(`another madmail serve (pid ${first.pid}) is running on ${alias}`);
    // A CLI command meanwhile is fine.
    expect((await sb.run(["queue", "list"])).code).toBe(0);
    // The kernel drops the lock with the process, however it ends: no stale lock to remove.
    process.kill(first.pid, "SIGKILL");
    await first.exited;
    const next = start([sb.bin, "serve", "--http", `127.0.0.1:${other}`]);
    const until = Date.now() + 10_000;
    while (!(await fetch(`http://127.0.0.1:${other}/healthz`).then((r) => r.ok, () => false))) {
      if (Date.now() > until || next.exitCode !== null) throw new Error(`serve did not start: ${await new Response(next.stderr).text()}`);
      await Bun.sleep(25);
    }
    expect(await stopTime(next, "SIGTERM")).toBeLessThan(1000);
    expect(next.exitCode).toBe(0);
  });
});

describe("npm start", () => {
  test("builds if needed, runs serve; Ctrl-C (SIGINT to the group) stops it within a second", async () => {
    expect((await sb.run(["config", "set", "listen.http", `127.0.0.1:${port}`])).code).toBe(0);
    const proc = start(["npm", "start", "--silent"], REPO);
    expect((await (await healthz(60_000)).json()).version).toBe(pkg.version);
    expect(await stopTime(proc, "SIGINT", -proc.pid)).toBeLessThan(1000);
    expect(await reachable()).toBe(false);
  }, 90_000);

  // BUG (package.json, not fixed here): the start script runs `./dist/madmail serve` under
  // `sh -c`, and sh does not pass npm's SIGTERM on, so `kill <npm pid>` (a supervisor, docker
  // stop) leaves the server running. Fix: `"start": "bun build.ts --if-needed && exec ./dist/madmail serve"`.
  // Remove `.failing` then.
  test("SIGTERM to npm alone stops the server within a second", async () => {
    expect((await sb.run(["config", "set", "listen.http", `127.0.0.1:${port}`])).code).toBe(0);
    const proc = start(["npm", "start", "--silent"], REPO);
    await healthz(60_000);
    await stopTime(proc, "SIGTERM");
    await Bun.sleep(1000);
    expect(await reachable()).toBe(false);
  }, 90_000);
});
