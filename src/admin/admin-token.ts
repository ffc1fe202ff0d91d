// The admin API token: created at init, rotated on demand, stored as a hash in meta.
import type { Db } from "../db/open.ts";
import { hashToken, newToken, tokenMatches } from "../util/secrets.ts";

const KEY = "admin_token_hash";
const KEY_AT = "admin_token_created_at";

export async function adminTokenCreatedAt(db: Db): Promise<number | null> {
  const row = await db.selectFrom("meta").select("value").where("key", "=", KEY_AT).executeTakeFirst();
  return row ? Number(row.value) : null;
}

/** Creates a token only if none exists; returns it, or null when one was already there. */
export async function createAdminTokenIfMissing(db: Db): Promise<string | null> {
  const token = newToken("mma");
  const now = String(Date.now());
  const r = await db.insertInto("meta").values({ key: KEY, value: hashToken(token) }).onConflict((oc) => oc.column("key").doNothing()).executeTakeFirst();
  if ((r.numInsertedOrUpdatedRows ?? 0n) === 0n) return null;
  await db.insertInto("meta").values({ key: KEY_AT, value: now }).onConflict((oc) => oc.column("key").doUpdateSet({ value: now })).execute();
  return token;
}

/** Replaces the token; the old one stops working at once. */
export async function rotateAdminToken(db: Db): Promise<string> {
  const token = newToken("mma");
  const now = String(Date.now());
  for (const [key, value] of [[KEY, hashToken(token)], [KEY_AT, now]] as const) {
    await db.insertInto("meta").values({ key, value }).onConflict((oc) => oc.column("key").doUpdateSet({ value })).execute();
  }
  return token;
}

export async function checkAdminToken(db: Db, presented: string): Promise<boolean> {
  const row = await db.selectFrom("meta").select("value").where("key", "=", KEY).executeTakeFirst();
  return tokenMatches(presented, row?.value);
}
