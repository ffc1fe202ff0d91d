// Frozen: never edit a migration that has shipped; add a new one.
import { sql, type Kysely } from "kysely";

export async function up(db: Kysely<any>): Promise<void> {
  // 1 once the remote recipients of a message with this delivery id are in the queue, set in the
  // transaction that queues them: a retry after a crash before the final record (a relay, a
  // pull-client killed before its ack) queues them no more.
  await sql`ALTER TABLE delivery_ids ADD COLUMN queued INTEGER NOT NULL DEFAULT 0`.execute(db);
}
