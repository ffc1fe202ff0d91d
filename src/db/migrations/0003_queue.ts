// Frozen: never edit a migration that has shipped; add a new one.
import { sql, type Kysely } from "kysely";

export async function up(db: Kysely<any>): Promise<void> {
  // One row per accepted message for remote recipients; the body is stored once.
  await db.schema.createTable("messages")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("mail_from", "text", (c) => c.notNull())
    .addColumn("body", "blob", (c) => c.notNull())
    .addColumn("size", "integer", (c) => c.notNull())
    .addColumn("door", "text", (c) => c.notNull())
    .addColumn("auth_user", "text")
    .addColumn("received_at", "integer", (c) => c.notNull())
    .execute();
  // One row per destination domain of a message (its recipients grouped, one POST each).
  await db.schema.createTable("deliveries")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("message_id", "text", (c) => c.notNull().references("messages.id").onDelete("cascade"))
    .addColumn("rcpt_domain", "text", (c) => c.notNull())
    .addColumn("rcpts", "text", (c) => c.notNull()) // JSON array of addresses
    .addColumn("state", "text", (c) => c.notNull().check(sql`state in ('queued', 'deferred', 'held', 'delivering', 'delivered', 'dead')`))
    .addColumn("route", "text") // how it went (or was last tried): e.g. https:mx.b.test, smtp:mx.b.test:25
    .addColumn("tries", "integer", (c) => c.notNull().defaultTo(0))
    .addColumn("next_attempt_at", "integer", (c) => c.notNull())
    .addColumn("lease_until", "integer")
    .addColumn("last_error", "text")
    .addColumn("created_at", "integer", (c) => c.notNull())
    .addColumn("updated_at", "integer", (c) => c.notNull())
    .addColumn("expires_at", "integer", (c) => c.notNull())
    .addColumn("rerouted_to", "text") // exchanger name after a delayed reroute
    .execute();
  await db.schema.createIndex("deliveries_due").on("deliveries").columns(["state", "next_attempt_at"]).execute();
  await db.schema.createIndex("deliveries_domain").on("deliveries").columns(["rcpt_domain", "state"]).execute();
  await db.schema.createIndex("deliveries_message").on("deliveries").column("message_id").execute();
  // Every attempt, for `queue show` and the panel.
  await db.schema.createTable("delivery_attempts")
    .addColumn("id", "integer", (c) => c.primaryKey().autoIncrement())
    .addColumn("delivery_id", "text", (c) => c.notNull().references("deliveries.id").onDelete("cascade"))
    .addColumn("at", "integer", (c) => c.notNull())
    .addColumn("transport", "text", (c) => c.notNull()) // https | http | smtp | smarthost | exchanger | policy | reroute
    .addColumn("endpoint", "text", (c) => c.notNull())
    .addColumn("outcome", "text", (c) => c.notNull().check(sql`outcome in ('delivered', 'temporary', 'permanent', 'note')`))
    .addColumn("detail", "text")
    .addColumn("ms", "integer")
    .execute();
  await db.schema.createIndex("delivery_attempts_delivery").on("delivery_attempts").column("delivery_id").execute();
  // What worked last per destination domain, tried first next time.
  await db.schema.createTable("endpoint_cache")
    .addColumn("domain", "text", (c) => c.primaryKey())
    .addColumn("transport", "text", (c) => c.notNull())
    .addColumn("endpoint", "text", (c) => c.notNull())
    .addColumn("ok_at", "integer")
    .addColumn("fail_at", "integer")
    .execute();
  // Per peer domain counters, flushed from memory by the federation tracker.
  await db.schema.createTable("federation_server_stats")
    .addColumn("domain", "text", (c) => c.primaryKey())
    .addColumn("attempts", "integer", (c) => c.notNull().defaultTo(0))
    .addColumn("successes", "integer", (c) => c.notNull().defaultTo(0))
    .addColumn("failures", "integer", (c) => c.notNull().defaultTo(0))
    .addColumn("https_ok", "integer", (c) => c.notNull().defaultTo(0))
    .addColumn("https_fail", "integer", (c) => c.notNull().defaultTo(0))
    .addColumn("http_ok", "integer", (c) => c.notNull().defaultTo(0))
    .addColumn("http_fail", "integer", (c) => c.notNull().defaultTo(0))
    .addColumn("smtp_ok", "integer", (c) => c.notNull().defaultTo(0))
    .addColumn("smtp_fail", "integer", (c) => c.notNull().defaultTo(0))
    .addColumn("inbound", "integer", (c) => c.notNull().defaultTo(0))
    .addColumn("latency_ms_total", "integer", (c) => c.notNull().defaultTo(0))
    .addColumn("latency_count", "integer", (c) => c.notNull().defaultTo(0))
    .addColumn("last_latency_ms", "integer")
    .addColumn("last_error", "text")
    .addColumn("last_active_at", "integer")
    .execute();
}
