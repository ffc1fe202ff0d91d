// serve's file calls run on Bun's I/O thread pool; madmail widens it (src/util/io-threads.ts)
// so that durable Maildir writes do not wait in line for one fsync per CPU core, and leaves a
// UV_THREADPOOL_SIZE set by the sysadmin alone. Checked on the compiled binary under 48
// concurrent deliveries, by the threads the process has (Linux: /proc/PID/task/*/comm).
import { afterEach, expect, test } from "bun:test";
import { readFileSync, readdirSync } from "node:fs";
import { DEFAULT_IO_THREADS } from "../../src/util/io-threads.ts";
import { postMxdeliv, type ServerHandle } from "../helpers/server.ts";
import { ENCRYPTED, maildirNew, startChatServer } from "./_fixtures.ts";

const running: ServerHandle[] = [];
afterEach(async () => {
  for (const s of running.splice(0)) {
    await s.stop();
    s.box.cleanup();
  }
});

function poolThreads(pid: number): number {
  return readdirSync(`/proc/${pid}/task`).filter((t) => readFileSync(`/proc/${pid}/task/${t}/comm`, "utf8").startsWith("Bun Pool")).length;
}

async function loaded(env?: Record<string, string>): Promise<ServerHandle> {
  const s = await startChatServer({ env });
  running.push(s);
  // Several rounds: the pool starts threads as tasks wait for one.
  for (let round = 0; round < 3; round++) {
    const rs = await Promise.all(Array.from({ length: 48 }, () => postMxdeliv(s.url, "alice@a.test", ["carol@chat.test"], ENCRYPTED())));
    expect(rs.every((r) => r.status === 200)).toBe(true);
  }
  expect(maildirNew(s, "carol@chat.test").length).toBe(3 * 48);
  return s;
}

test.skipIf(process.platform !== "linux")("serve runs file calls on up to 16 threads (Bun's default is one per core; this host has 2)", async () => {
  const s = await loaded();
  const n = poolThreads(s.proc.pid);
  expect(n).toBeGreaterThan(3);
  expect(n).toBeLessThanOrEqual(DEFAULT_IO_THREADS);
});

test.skipIf(process.platform !== "linux")("UV_THREADPOOL_SIZE set by the sysadmin is kept", async () => {
  const s = await loaded({ UV_THREADPOOL_SIZE: "3" });
  const n = poolThreads(s.proc.pid);
  expect(n).toBeGreaterThanOrEqual(1);
  expect(n).toBeLessThanOrEqual(3);
});
