// Frozen: never edit a migration that has shipped; add a new one.
import type { Kysely } from "kysely";

export async function up(db: Kysely<any>): Promise<void> {
  // X-Madmail-Delivery-Id values already stored, so that a retried POST is answered 200
  // without a second copy. Pruned after the mxdeliv.dedup_window setting.
  await db.schema.createTable("delivery_ids")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("seen_at", "integer", (c) => c.notNull())
    .execute();
  await db.schema.createIndex("delivery_ids_seen_at").on("delivery_ids").column("seen_at").execute();
}
