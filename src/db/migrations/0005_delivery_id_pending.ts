// Frozen: never edit a migration that has shipped; add a new one.
import { sql, type Kysely } from "kysely";

export async function up(db: Kysely<any>): Promise<void> {
  // 1 while the local copies of a message with this delivery id are being written: after a
  // crash, a retry with the same id looks into the Maildirs instead of storing twice.
  await sql`ALTER TABLE delivery_ids ADD COLUMN pending INTEGER NOT NULL DEFAULT 0`.execute(db);
}
