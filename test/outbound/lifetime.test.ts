// queue.lifetime: mail is retried for the whole of it. A retry the schedule would put after its
// end is made at the end, and only that last failed attempt gives the entry up (dead + bounce).
import { afterEach, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { Database } from "bun:sqlite";
import { freePort, startServe, waitUntil, type ServerHandle } from "../helpers/server.ts";
import { ENCRYPTED, maildirNew } from "../inbound/_fixtures.ts";

let a: ServerHandle | undefined;
afterEach(async () => {
  if (a) await a.stop().catch(() => {});
  a?.box.cleanup();
  a = undefined;
});

type Row = { id: string; state: string; tries: number; next_attempt_at: string | null; last_error: string | null };

test("the last retry is made at the end of the lifetime, not skipped; then dead with a 4.4.7 bounce", async () => {
  const closed = await freePort();
  a = await startServe({
    setup: [
      ["init", "--domain", "a.test"], ["user", "add", "alice@a.test"],
      ["endpoint-cache", "set", "b.test", `http://127.0.0.1:${closed}/mxdeliv`],
      ["config", "set", "queue.retry_schedule", "1h"], ["config", "set", "delivery.reroute_after", "0"],
    ],
  });
  expect((await a.box.run(["send", "--from", "alice@a.test", "--to", "bob@b.test"], { stdin: ENCRYPTED() })).code).toBe(0);
  const rows = async () => JSON.parse((await a!.box.run(["queue", "list", "--json"])).stdout) as Row[];
  const [first] = await waitUntil("deferred", async () => ((r) => (r[0]?.state === "deferred" ? r : undefined))(await rows()));
  // An hour to the next try; the lifetime now ends in 3 s.
  const end = Date.now() + 3000;
  const db = new Database(a.box.db);
  db.run("PRAGMA busy_timeout = 10000");
  db.run("UPDATE deliveries SET expires_at = ? WHERE id = ?", [end, first!.id]);
  db.close();
  expect((await a.box.run(["queue", "flush", "--quiet"])).code).toBe(0);
  const [second] = await waitUntil("the second try", async () => ((r) => (r[0] && r[0].tries >= 2 ? r : undefined))(await rows()));
  expect(second).toMatchObject({ state: "deferred", next_attempt_at: new Date(end).toISOString() });
  expect(maildirNew(a, "alice@a.test")).toEqual([]);
  const [last] = await waitUntil("dead", async () => ((r) => (r[0]?.state === "dead" ? r : undefined))(await rows()), 15_000);
  expect(last!.tries).toBe(3);
  expect(last!.last_error).toStartWith("gave up (queue.lifetime reached): ");
  const dsn = await waitUntil("the bounce", async () => ((f) => (f.length ? f : undefined))(maildirNew(a!, "alice@a.test")));
  expect(readFileSync(join(a.box.dir, "data", "mail", "alice@a.test", "new", dsn[0]!), "utf8")).toContain("Status: 4.4.7");
});
