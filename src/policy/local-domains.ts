// The domains this server delivers locally.
import type { Db } from "../db/open.ts";
import type { DomainRow } from "../db/schema.ts";

export async function listDomains(db: Db): Promise<DomainRow[]> {
  return db.selectFrom("domains").selectAll().orderBy("name").execute();
}

/** Returns false when it was already there. */
export async function addDomain(db: Db, name: string, now = Date.now()): Promise<boolean> {
  const r = await db.insertInto("domains").values({ name, created_at: now }).onConflict((oc) => oc.column("name").doNothing()).executeTakeFirst();
  return (r.numInsertedOrUpdatedRows ?? 0n) > 0n;
}

export async function removeDomain(db: Db, name: string): Promise<boolean> {
  const r = await db.deleteFrom("domains").where("name", "=", name).executeTakeFirst();
  return r.numDeletedRows > 0n;
}
