// The state file's disk full while the queue has work: nothing is sent on a claim that could not
// be recorded, and once there is room again every message goes out exactly once. A tmpfs of its
// own holds the sender's state (root only; skipped otherwise).
import { afterAll, expect, test } from "bun:test";
import { mkdirSync, openSync, closeSync, rmSync, writeSync } from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { sandbox } from "../helpers/binary.ts";
import { freePort, startServe, waitUntil, type ServerHandle } from "../helpers/server.ts";
import { ENCRYPTED } from "../inbound/_fixtures.ts";
import { Database } from "bun:sqlite";

const isRoot = process.getuid?.() === 0;
/** Whether this environment lets us mount a tmpfs (a container may not). */
const canMount = isRoot && (() => {
  const probe = join(tmpdir(), `madmail-mount-probe-${process.pid}`);
  const ok = mountTmpfs(probe, "1m");
  if (ok) Bun.spawnSync(["umount", probe]);
  rmSync(probe, { recursive: true, force: true });
  return ok;
})();
const cleanups: (() => unknown)[] = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});

function mountTmpfs(dir: string, size: string): boolean {
  mkdirSync(dir, { recursive: true });
  return Bun.spawnSync(["mount", "-t", "tmpfs", "-o", `size=${size}`, "tmpfs", dir]).exitCode === 0;
}

/** Writes zeros to `path` until the file system is full. */
function fill(path: string): void {
  const fd = openSync(path, "w");
  const chunk = Buffer.alloc(64 * 1024);
  try {
    for (;;) writeSync(fd, chunk);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOSPC") throw err;
  } finally {
    closeSync(fd);
  }
}

test.skipIf(!canMount)("the state file's disk fills up under a backlog: no delivery without a recorded claim, then each exactly once", async () => {
  const box = sandbox();
  const data = join(box.dir, "data");
  expect(mountTmpfs(data, "32m")).toBe(true);
  cleanups.push(() => {
    Bun.spawnSync(["umount", "-l", data]);
    box.cleanup();
  });
  const sinkPort = await freePort();
  const a: ServerHandle = await startServe({
    box,
    setup: [
      ["init", "--domain", "a.test"], ["user", "add", "alice@a.test"],
      ["endpoint-cache", "set", "b.test", `http://127.0.0.1:${sinkPort}/mxdeliv`], ["config", "set", "queue.retry_schedule", "1s"],
    ],
  });
  cleanups.push(() => a.stop());
  // 20 messages, deferred: nothing listens on the peer's port yet.
  for (let i = 0; i < 20; i++) {
    expect((await box.run(["send", "--from", "alice@a.test", "--to", `bob${i}@b.test`], { stdin: ENCRYPTED() })).code).toBe(0);
  }
  await waitUntil("all deferred", async () => {
    const rows = JSON.parse((await box.run(["queue", "list", "--json"])).stdout) as { state: string; tries: number }[];
    return rows.length === 20 && rows.every((r) => r.state === "deferred" && r.tries >= 1);
  });
  // An empty WAL first: with room left in it from earlier commits, SQLite would not need the disk.
  const db = new Database(box.db);
  try {
    db.query("PRAGMA wal_checkpoint(TRUNCATE)").all();
  } finally {
    db.close();
  }
  const filler = join(data, "filler");
  fill(filler);
  // The peer comes up, a peer that does not deduplicate: it counts every POST.
  const posts: string[] = [];
  const sink = Bun.serve({
    hostname: "127.0.0.1", port: sinkPort,
    async fetch(req) {
      await req.arrayBuffer();
      posts.push(req.headers.get("x-madmail-delivery-id") ?? "");
      return new Response("OK");
    },
  });
  cleanups.push(() => sink.stop(true));
  await Bun.sleep(5000);
  // Claims could not be recorded: nothing went out on them (it used to, again and again).
  expect(a.logs()).toContain("claiming deliveries failed");
  expect(posts.length).toBe(new Set(posts).size);
  rmSync(filler);
  await waitUntil("all delivered", () => new Set(posts).size === 20 || undefined, 30_000);
  await Bun.sleep(2500); // time for a wrong second copy to show up
  expect(posts.length).toBe(20);
}, 90_000);
