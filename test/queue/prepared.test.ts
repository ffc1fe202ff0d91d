// Prepared queries (src/db/prepared.ts) against a real state file: the values of each call land
// where their markers were, constants stay, inside and outside a transaction, and a build that
// would lose its columns is refused instead of running.
import { expect, test } from "bun:test";
import { sql } from "kysely";
import { withWriteTransaction } from "../../src/db/open.ts";
import { changedRows, firstRow, prepareQuery } from "../../src/db/prepared.ts";
import { useStateFile } from "../helpers/state-file.ts";

const file = useStateFile("prepared", "file");

const insertUser = prepareQuery((db, p: { address: string; quota: number | null; at: number }) =>
  db.insertInto("users").values({ address: p.address, password_hash: "x", quota_bytes: p.quota, created_at: p.at }));
const addUsed = prepareQuery((db, p: { address: string; bytes: number }) =>
  db.updateTable("users").set({ used_bytes: sql`used_bytes + ${p.bytes}` }).where("address", "=", p.address));
const selectUser = prepareQuery((db, p: { address: string }) => db.selectFrom("users").selectAll().where("address", "=", p.address));

test("values go where their markers were, call after call, with constants kept", async () => {
  await insertUser(file.state.db, { address: "a@x.test", quota: 100, at: 1 });
  await withWriteTransaction(file.state.db, async (trx) => void (await insertUser(trx, { address: "b@x.test", quota: null, at: 2 })));
  expect(await changedRows(addUsed, file.state.db, { address: "a@x.test", bytes: 7 })).toBe(1n);
  expect(await changedRows(addUsed, file.state.db, { address: "a@x.test", bytes: 5 })).toBe(1n);
  expect(await changedRows(addUsed, file.state.db, { address: "nobody@x.test", bytes: 5 })).toBe(0n);
  const a = await firstRow(selectUser, file.state.db, { address: "a@x.test" });
  const b = await firstRow(selectUser, file.state.db, { address: "b@x.test" });
  expect(a).toMatchObject({ address: "a@x.test", password_hash: "x", quota_bytes: 100, used_bytes: 12, created_at: 1 });
  expect(b).toMatchObject({ address: "b@x.test", password_hash: "x", quota_bytes: null, used_bytes: 0, created_at: 2 });
  expect(await firstRow(selectUser, file.state.db, { address: "c@x.test" })).toBeUndefined();
  // The same rows as Kysely's own query builder gives.
  expect(a).toEqual(await file.state.db.selectFrom("users").selectAll().where("address", "=", "a@x.test").executeTakeFirstOrThrow());
});

test("a build that names no parameter (values(p) on the key-less stand-in) is refused, and writes nothing", async () => {
  const broken = prepareQuery((db, p: { name: string; created_at: number }) => db.insertInto("domains").values(p));
  await expect(broken(file.state.db, { name: "d.test", created_at: 1 })).rejects.toThrow(/prepared query without parameters/);
  expect(await file.state.db.selectFrom("domains").selectAll().execute()).toEqual([]);
});

test("a value missing from a call is refused on first use", async () => {
  const q = prepareQuery((db, p: { name: string }) => db.selectFrom("domains").selectAll().where("name", "=", p.name));
  await expect(q(file.state.db, {} as { name: string })).rejects.toThrow(/no value for name/);
});
