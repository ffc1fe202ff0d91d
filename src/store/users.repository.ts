// Local users and their quota accounting.
import { sql } from "kysely";
import type { Db } from "../db/open.ts";
import type { UserRow } from "../db/schema.ts";
import { firstRow, prepareQuery } from "../db/prepared.ts";

export async function listUsers(db: Db): Promise<UserRow[]> {
  return db.selectFrom("users").selectAll().orderBy("address").execute();
}

const selectUser = prepareQuery((db, p: { address: string }) => db.selectFrom("users").selectAll().where("address", "=", p.address));

export async function findUser(db: Db, address: string): Promise<UserRow | undefined> {
  return firstRow(selectUser, db, { address });
}

/** Returns false when the address exists already (nothing written). */
export async function insertUser(db: Db, address: string, passwordHash: string | null, quotaBytes: number | null, now = Date.now()): Promise<boolean> {
  const r = await db.insertInto("users")
    .values({ address, password_hash: passwordHash, quota_bytes: quotaBytes, created_at: now })
    .onConflict((oc) => oc.column("address").doNothing())
    .executeTakeFirst();
  return (r.numInsertedOrUpdatedRows ?? 0n) > 0n;
}

export async function deleteUser(db: Db, address: string): Promise<boolean> {
  const r = await db.deleteFrom("users").where("address", "=", address).executeTakeFirst();
  return r.numDeletedRows > 0n;
}

export async function setUserQuota(db: Db, address: string, quotaBytes: number | null): Promise<boolean> {
  const r = await db.updateTable("users").set({ quota_bytes: quotaBytes }).where("address", "=", address).executeTakeFirst();
  return r.numUpdatedRows > 0n;
}

export async function setUserPassword(db: Db, address: string, passwordHash: string): Promise<boolean> {
  const r = await db.updateTable("users").set({ password_hash: passwordHash }).where("address", "=", address).executeTakeFirst();
  return r.numUpdatedRows > 0n;
}

const addUsed = prepareQuery((db, p: { address: string; bytes: number }) =>
  db.updateTable("users").set({ used_bytes: sql`used_bytes + ${p.bytes}` }).where("address", "=", p.address));

export async function addUsedBytes(db: Db, address: string, bytes: number): Promise<void> {
  await addUsed(db, { address, bytes });
}
