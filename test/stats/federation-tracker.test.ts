import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { sql } from "kysely";
import { openDb, type Db, type OpenedDb } from "../../src/db/open.ts";
import { createFederationTracker, readFederationStats, type FederationTracker } from "../../src/stats/federation-tracker.ts";

let dir: string;
let opened: OpenedDb;
let db: Db;
let clock: number;
let tracker: FederationTracker;

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), "madmail-fedstats-"));
  opened = await openDb(join(dir, "madmail.db"));
  db = opened.db;
  clock = Date.parse("2026-11-20T10:00:00Z");
  tracker = createFederationTracker(db, { now: () => clock });
});
afterEach(async () => {
  await tracker.stop().catch(() => {});
  await opened.close().catch(() => {});
  rmSync(dir, { recursive: true, force: true });
});

/** A Db whose every use goes to whatever current() returns at that moment. */
function delegate(current: () => Db): Db {
  return new Proxy({} as Db, {
    get(_, prop) {
      const target = current();
      const v = Reflect.get(target, prop);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
}

const rows = () => db.selectFrom("federation_server_stats").selectAll().orderBy("domain").execute();
const row = async (domain: string) => (await rows()).find((r) => r.domain === domain);

describe("flush", () => {
  test("many events become one row per domain with the sums", async () => {
    for (let i = 0; i < 100; i++) tracker.recordOutbound("b.test", "https", true, 100 + i);
    for (let i = 0; i < 10; i++) tracker.recordOutbound("b.test", "smtp", false, 1000, "connection refused");
    tracker.recordOutbound("B.Test.", "http", true, 50); // case and trailing dot: the same peer
    for (let i = 0; i < 7; i++) tracker.recordInbound("c.test");
    clock += 5000;
    tracker.recordInbound("b.test");
    expect(await rows()).toEqual([]); // nothing written before a flush
    await tracker.flush();

    expect(await rows()).toEqual([
      {
        domain: "b.test",
        attempts: 111,
        successes: 101,
        failures: 10,
        https_ok: 100,
        https_fail: 0,
        http_ok: 1,
        http_fail: 0,
        smtp_ok: 0,
        smtp_fail: 10,
        inbound: 1,
        latency_ms_total: 100 * 100 + 4950 + 10 * 1000 + 50,
        latency_count: 111,
        last_latency_ms: 50,
        last_error: null, // the last attempt succeeded
        last_active_at: clock,
      },
      {
        domain: "c.test",
        attempts: 0,
        successes: 0,
        failures: 0,
        https_ok: 0,
        https_fail: 0,
        http_ok: 0,
        http_fail: 0,
        smtp_ok: 0,
        smtp_fail: 0,
        inbound: 7,
        latency_ms_total: 0,
        latency_count: 0,
        last_latency_ms: null,
        last_error: null,
        last_active_at: clock - 5000,
      },
    ]);
  });

  test("a second flush adds to the rows; inbound alone leaves the last error and latency", async () => {
    tracker.recordOutbound("b.test", "https", false, 30_000, "timeout");
    await tracker.flush();
    clock += 1000;
    tracker.recordOutbound("b.test", "https", true, 200);
    tracker.recordOutbound("b.test", "smtp", false, 400, "451 4.3.0 try later\r\nX: y");
    await tracker.flush();
    let r = (await row("b.test"))!;
    expect([r.attempts, r.successes, r.failures, r.https_ok, r.https_fail, r.smtp_fail]).toEqual([3, 1, 2, 1, 1, 1]);
    expect([r.latency_ms_total, r.latency_count, r.last_latency_ms]).toEqual([30_600, 3, 400]);
    expect(r.last_error).toBe("451 4.3.0 try later X: y");

    clock += 1000;
    tracker.recordInbound("b.test");
    await tracker.flush();
    r = (await row("b.test"))!;
    expect([r.inbound, r.attempts, r.last_latency_ms, r.last_error, r.last_active_at]).toEqual([1, 3, 400, "451 4.3.0 try later X: y", clock]);
  });

  test("a flush with nothing recorded writes nothing", async () => {
    await tracker.flush();
    expect(await rows()).toEqual([]);
  });

  test("a failure without error text still reads as a failure; bad latencies are not averaged", async () => {
    tracker.recordOutbound("b.test", "http", false, Number.NaN);
    tracker.recordOutbound("b.test", "http", false, -5, "x".repeat(10_000));
    await tracker.flush();
    const r = (await row("b.test"))!;
    expect([r.attempts, r.http_fail, r.latency_count, r.latency_ms_total, r.last_latency_ms]).toEqual([2, 2, 0, 0, null]);
    expect(r.last_error).toBe("x".repeat(500));
    tracker.recordOutbound("b.test", "http", false, 10);
    await tracker.flush();
    expect((await row("b.test"))!.last_error).toBe("failed");
  });

  test("last_active_at never goes backwards (clock set back)", async () => {
    tracker.recordInbound("b.test");
    await tracker.flush();
    const t = clock;
    clock -= 60_000;
    tracker.recordInbound("b.test");
    await tracker.flush();
    expect((await row("b.test"))!.last_active_at).toBe(t);
  });

  test("concurrent flushes, with events recorded in between, count everything once", async () => {
    let inTransaction = 0;
    let overlapped = false;
    const watched = delegate(() => db);
    const t = createFederationTracker(
      new Proxy(watched, {
        get(target, prop) {
          if (prop !== "connection") return Reflect.get(target, prop);
          return () => ({
            execute: async (fn: (c: unknown) => Promise<unknown>) => {
              if (inTransaction++) overlapped = true;
              try {
                return await db.connection().execute(fn as never);
              } finally {
                inTransaction--;
              }
            },
          });
        },
      }),
      { now: () => clock },
    );
    // libsql answers synchronously: only flushes started in the same turn could overlap.
    const flushes: Promise<void>[] = [];
    for (let i = 0; i < 20; i++) {
      for (let j = 0; j < 50; j++) t.recordOutbound(`p${j % 5}.test`, "https", j % 2 === 0, 10);
      t.recordInbound("p0.test");
      flushes.push(t.flush());
      t.recordInbound("p1.test"); // while that flush runs
      if (i % 5 === 4) await Bun.sleep(1);
    }
    await Promise.all(flushes);
    await t.flush();
    expect(overlapped).toBe(false);
    const all = await rows();
    expect(all.map((r) => r.domain)).toEqual(["p0.test", "p1.test", "p2.test", "p3.test", "p4.test"]);
    for (const r of all) {
      expect(r.attempts).toBe(200);
      expect(r.latency_ms_total).toBe(2000);
    }
    expect(all.reduce((n, r) => n + r.successes, 0)).toBe(500);
    expect([all[0]!.inbound, all[1]!.inbound]).toEqual([20, 20]);
  });

  test("a failed flush rolls back and keeps the deltas; the next flush writes them once", async () => {
    // A trigger makes the transaction fail after other domains were already upserted in it.
    await sql`CREATE TRIGGER refuse BEFORE INSERT ON federation_server_stats WHEN NEW.domain = 'z.test'
              BEGIN SELECT RAISE(ABORT, 'refused by test'); END`.execute(db);
    tracker.recordOutbound("a.test", "https", false, 100, "first error");
    tracker.recordInbound("b.test");
    tracker.recordInbound("z.test");
    await expect(tracker.flush()).rejects.toThrow(/refused by test/);
    expect(await rows()).toEqual([]);

    tracker.recordOutbound("a.test", "smtp", true, 300); // newer than the kept delta
    await expect(tracker.flush()).rejects.toThrow(/refused by test/);
    await sql`DROP TRIGGER refuse`.execute(db);
    await tracker.flush();
    const all = await rows();
    expect(all.map((r) => [r.domain, r.attempts, r.inbound])).toEqual([["a.test", 2, 0], ["b.test", 0, 1], ["z.test", 0, 1]]);
    const a = all[0]!;
    expect([a.https_fail, a.smtp_ok, a.latency_ms_total, a.last_latency_ms, a.last_error]).toEqual([1, 1, 400, 300, null]);
    await tracker.flush();
    expect((await rows()).map((r) => r.attempts + r.inbound)).toEqual([2, 1, 1]);
  });

  test("events recorded while a flush fails are kept too, after the failed batch", async () => {
    let fail = true;
    let duringFlush: () => void = () => {};
    // A database whose transaction throws after the tracker has handed its batch over.
    const flaky = delegate(() =>
      fail
        ? ({
            connection: () => ({
              execute: async () => {
                duringFlush();
                throw new Error("disk I/O error");
              },
            }),
          } as unknown as Db)
        : db,
    );
    const t = createFederationTracker(flaky, { now: () => clock });
    t.recordOutbound("b.test", "https", false, 10, "old error");
    duringFlush = () => t.recordOutbound("b.test", "https", false, 20, "new error");
    await expect(t.flush()).rejects.toThrow(/disk I\/O/);
    fail = false;
    await t.flush();
    const r = (await row("b.test"))!;
    expect([r.attempts, r.latency_ms_total, r.last_latency_ms, r.last_error]).toEqual([2, 30, 20, "new error"]);
  });

  test("a closed database fails the flush without losing the deltas", async () => {
    const other = await openDb(join(dir, "madmail.db"));
    let current: Db = other.db;
    const t = createFederationTracker(delegate(() => current), { now: () => clock });
    t.recordInbound("b.test");
    t.recordOutbound("b.test", "http", false, 10, "404 no such endpoint");
    await other.close();
    await expect(t.flush()).rejects.toThrow();
    current = db; // the same file, opened again
    await t.flush();
    const r = (await row("b.test"))!;
    expect([r.inbound, r.http_fail, r.last_error]).toEqual([1, 1, "404 no such endpoint"]);
  });
});

describe("timer", () => {
  test("start() flushes on its interval", async () => {
    tracker.start(20);
    tracker.recordInbound("b.test");
    for (let i = 0; i < 100 && !(await row("b.test")); i++) await Bun.sleep(10);
    expect((await row("b.test"))?.inbound).toBe(1);
  });

  test("stop() flushes what is left and stops the timer", async () => {
    tracker.start(10);
    tracker.recordOutbound("b.test", "smtp", true, 5);
    await tracker.stop();
    expect((await row("b.test"))?.smtp_ok).toBe(1);
    tracker.recordInbound("b.test");
    await Bun.sleep(50);
    expect((await row("b.test"))?.inbound).toBe(0);
  });
});

describe("views", () => {
  test("readFederationStats: computed fields, most recently active first", async () => {
    tracker.recordOutbound("old.test", "https", true, 100);
    tracker.recordOutbound("old.test", "https", true, 101);
    clock += 60_000;
    tracker.recordOutbound("new.test", "smtp", false, 250, "550 5.7.1 refused");
    await tracker.flush();
    await db.insertInto("federation_server_stats").values({ domain: "never.test" }).execute();

    expect(await readFederationStats(db)).toEqual([
      {
        domain: "new.test",
        attempts: 1,
        successes: 0,
        failures: 1,
        https_ok: 0,
        https_fail: 0,
        http_ok: 0,
        http_fail: 0,
        smtp_ok: 0,
        smtp_fail: 1,
        inbound: 0,
        mean_latency_ms: 250,
        last_latency_ms: 250,
        last_error: "550 5.7.1 refused",
        last_active_at: "2026-11-20T10:01:00.000Z",
      },
      {
        domain: "old.test",
        attempts: 2,
        successes: 2,
        failures: 0,
        https_ok: 2,
        https_fail: 0,
        http_ok: 0,
        http_fail: 0,
        smtp_ok: 0,
        smtp_fail: 0,
        inbound: 0,
        mean_latency_ms: 101, // 100.5 rounded
        last_latency_ms: 101,
        last_error: null,
        last_active_at: "2026-11-20T10:00:00.000Z",
      },
      expect.objectContaining({ domain: "never.test", mean_latency_ms: null, last_latency_ms: null, last_active_at: null }),
    ]);
  });

  test("snapshot() merges unflushed events into the rows without writing them", async () => {
    tracker.recordOutbound("b.test", "https", true, 100);
    await tracker.flush();
    clock += 1000;
    tracker.recordOutbound("b.test", "https", false, 300, "503 busy");
    tracker.recordInbound("c.test");
    const snap = await tracker.snapshot();
    expect(snap.map((v) => [v.domain, v.attempts, v.https_ok, v.https_fail, v.inbound, v.mean_latency_ms, v.last_error])).toEqual([
      ["b.test", 2, 1, 1, 0, 200, "503 busy"],
      ["c.test", 0, 0, 0, 1, null, null],
    ]);
    expect((await readFederationStats(db)).map((v) => [v.domain, v.attempts])).toEqual([["b.test", 1]]);
    await tracker.flush();
    expect(await readFederationStats(db)).toEqual(snap);
  });
});
