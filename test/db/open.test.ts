// What openDb sets on every connection to the state file.
import { expect, test } from "bun:test";
import { sql } from "kysely";
import { useStateFile } from "../helpers/state-file.ts";

const file = useStateFile("open", "file");

const pragma = async (name: string) => Object.values((await sql.raw(`PRAGMA ${name}`).execute(file.state.db)).rows[0] as object)[0];

test("WAL with checkpoints every 10,000 pages, FULL commits, foreign keys enforced", async () => {
  expect(await pragma("journal_mode")).toBe("wal");
  expect(await pragma("wal_autocheckpoint")).toBe(10000);
  expect(await pragma("synchronous")).toBe(2); // FULL
  expect(await pragma("foreign_keys")).toBe(1);
  expect(await pragma("busy_timeout")).toBe(30000);
});
