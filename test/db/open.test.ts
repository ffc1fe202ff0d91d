// What openDb sets on every connection to the state file.
import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { sql } from "kysely";
import { openDb, type OpenedDb } from "../../src/db/open.ts";

let dir: string;
let state: OpenedDb;
beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "madmail-open-"));
  state = await openDb(join(dir, "madmail.db"));
});
afterAll(async () => {
  await state.close();
  rmSync(dir, { recursive: true, force: true });
});

const pragma = async (name: string) => Object.values((await sql.raw(`PRAGMA ${name}`).execute(state.db)).rows[0] as object)[0];

test("WAL with checkpoints every 10,000 pages, FULL commits, foreign keys enforced", async () => {
  expect(await pragma("journal_mode")).toBe("wal");
  expect(await pragma("wal_autocheckpoint")).toBe(10000);
  expect(await pragma("synchronous")).toBe(2); // FULL
  expect(await pragma("foreign_keys")).toBe(1);
  expect(await pragma("busy_timeout")).toBe(30000);
});
