// Frozen: never edit a migration that has shipped; add a new one.
import { sql, type Kysely } from "kysely";

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.createTable("settings")
    .addColumn("key", "text", (c) => c.primaryKey())
    .addColumn("value", "text", (c) => c.notNull())
    .execute();
  await db.schema.createTable("meta")
    .addColumn("key", "text", (c) => c.primaryKey())
    .addColumn("value", "text", (c) => c.notNull())
    .execute();
  await db.schema.createTable("domains")
    .addColumn("name", "text", (c) => c.primaryKey())
    .addColumn("created_at", "integer", (c) => c.notNull())
    .execute();
  await db.schema.createTable("users")
    .addColumn("address", "text", (c) => c.primaryKey())
    .addColumn("password_hash", "text")
    .addColumn("quota_bytes", "integer")
    .addColumn("used_bytes", "integer", (c) => c.notNull().defaultTo(0))
    .addColumn("created_at", "integer", (c) => c.notNull())
    .execute();
  await db.schema.createTable("dns_overrides")
    .addColumn("lookup_key", "text", (c) => c.primaryKey())
    .addColumn("target_host", "text", (c) => c.notNull())
    .addColumn("comment", "text")
    .addColumn("created_at", "integer", (c) => c.notNull())
    .addColumn("updated_at", "integer", (c) => c.notNull())
    .execute();
  await db.schema.createTable("exchangers")
    .addColumn("name", "text", (c) => c.primaryKey())
    .addColumn("url", "text", (c) => c.notNull())
    .addColumn("enabled", "integer", (c) => c.notNull().defaultTo(1))
    .addColumn("mode", "text", (c) => c.notNull().check(sql`mode in ('push', 'pull')`))
    .addColumn("poll_interval", "integer", (c) => c.notNull())
    .addColumn("domains", "text", (c) => c.notNull().defaultTo(""))
    .addColumn("fallback", "integer", (c) => c.notNull().defaultTo(0))
    .addColumn("token_hash", "text")
    .addColumn("remote_token", "text")
    .addColumn("last_poll_at", "integer")
    .addColumn("last_pull_at", "integer")
    .addColumn("last_error", "text")
    .addColumn("created_at", "integer", (c) => c.notNull())
    .addColumn("updated_at", "integer", (c) => c.notNull())
    .execute();
  await db.schema.createTable("federation_rules")
    .addColumn("domain", "text", (c) => c.notNull())
    .addColumn("kind", "text", (c) => c.notNull().check(sql`kind in ('block', 'allow', 'dismiss')`))
    .addColumn("created_at", "integer", (c) => c.notNull())
    .addPrimaryKeyConstraint("federation_rules_pk", ["domain", "kind"])
    .execute();
}
