// Frozen: never edit a migration that has shipped; add a new one.
import type { Kysely } from "kysely";

export async function up(db: Kysely<any>): Promise<void> {
  // The pull endpoint looks up mail held for one exchanger: route = 'exchanger:NAME'.
  await db.schema.createIndex("deliveries_route").on("deliveries").columns(["route", "state"]).execute();
}
