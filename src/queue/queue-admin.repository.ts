// The sysadmin side of the queue (postqueue, postsuper, qshape): look at entries, hold,
// release, retry, flush, delete. The delivery worker (queue.repository.ts) only takes rows that
// are queued/deferred and due, or delivering with a lapsed lease, and its own updates apply
// only while the row is still delivering under its lease. So the writes here never touch a row
// under a live lease; a delivering row whose lease lapsed (its worker died) may be held or
// deleted, as the worker itself would take it again, and a late worker's update then matches
// nothing.
import { sql, type Expression, type SqlBool } from "kysely";
import type { Db } from "../db/open.ts";
import type { DeliveryAttemptRow, DeliveryRow, DeliveryState, MessageRow } from "../db/schema.ts";

export const DELIVERY_STATES: readonly DeliveryState[] = ["queued", "deferred", "held", "delivering", "delivered", "dead"];
/** Everything still in the queue: what `queue list` shows by default and `queue stats` shapes. */
export const PENDING_STATES: readonly DeliveryState[] = DELIVERY_STATES.filter((s) => s !== "delivered");

/** qshape's age buckets, in minutes: 0-5, 5-10, 10-20, ..., 320-640, 640+. */
export const AGE_BUCKET_MINUTES = [5, 10, 20, 40, 80, 160, 320, 640] as const;

/** How much of a message `queue show` reads to find its header block (the body is never shown). */
export const HEADER_READ_LIMIT = 65536;

export type StateCounts = Record<DeliveryState, number>;

export interface QueueFilter {
  states: readonly DeliveryState[];
  domain?: string;
}

/** A row of `queue list`: the delivery and its message's envelope sender and size. */
export type QueueListRow = Pick<
  DeliveryRow,
  "id" | "message_id" | "state" | "rcpt_domain" | "rcpts" | "tries" | "created_at" | "next_attempt_at" | "last_error" | "route" | "rerouted_to"
> & Pick<MessageRow, "mail_from" | "size">;

export interface QueuePage {
  rows: QueueListRow[];
  /** Rows matching the filter, of which `rows` is the oldest `limit`. */
  matching: number;
}

export interface DomainShape {
  domain: string;
  total: number;
  /** Counts per AGE_BUCKET_MINUTES bucket, plus the last one for anything older. */
  buckets: number[];
}

export interface QueueStats {
  states: StateCounts;
  /** Every destination domain with pending rows, largest first. */
  domains: DomainShape[];
}

/** A message's envelope and the start of its text, for `queue show`. */
export type MessageHead = Pick<MessageRow, "mail_from" | "size" | "door" | "auth_user" | "received_at"> & { head: Uint8Array };

/** Rows counted per state, in the whole queue or for one destination domain. */
export async function countByState(db: Db, domain?: string): Promise<StateCounts> {
  // A covering scan of deliveries_due, or a range of deliveries_domain: no table row is read.
  let q = db.selectFrom("deliveries").select(["state", (eb) => eb.fn.countAll<number>().as("n")]).groupBy("state");
  if (domain !== undefined) q = q.where("rcpt_domain", "=", domain);
  const counts = Object.fromEntries(DELIVERY_STATES.map((s) => [s, 0])) as StateCounts;
  for (const r of await q.execute()) counts[r.state] = Number(r.n);
  return counts;
}

/**
 * The oldest `limit` rows matching the filter (all of them when limit is null), with the count
 * of matching rows. Two cheap counts decide how to read: see `useIndexes`.
 */
export async function listQueue(db: Db, filter: QueueFilter, limit: number | null): Promise<QueuePage> {
  const all = await countByState(db);
  const scope = filter.domain === undefined ? all : await countByState(db, filter.domain);
  const matching = sum(filter.states.map((s) => scope[s]));
  if (matching === 0) return { rows: [], matching };
  return { rows: await listDeliveries(db, filter, limit, useIndexes(matching, sum(Object.values(all)))), matching };
}

/**
 * One page of `queue list`, oldest first. With `indexed`, rows are found through deliveries_due
 * or deliveries_domain; without, the table is scanned (unary + keeps SQLite off the indexes).
 */
export async function listDeliveries(db: Db, filter: QueueFilter, limit: number | null, indexed: boolean): Promise<QueueListRow[]> {
  let page = db.selectFrom("deliveries")
    .select(["id", "message_id", "state", "rcpt_domain", "rcpts", "tries", "created_at", "next_attempt_at", "last_error", "route", "rerouted_to"])
    .where(col("state", indexed), "in", [...filter.states])
    .orderBy("created_at").orderBy("id");
  if (filter.domain !== undefined) page = page.where(col("rcpt_domain", indexed), "=", filter.domain);
  if (limit !== null) page = page.limit(limit);
  // The page is cut before the join: SQLite then reads only its messages (size sits after the
  // body in the row, so each read walks the body's overflow pages).
  return db.selectFrom(page.as("d"))
    .innerJoin("messages as m", "m.id", "d.message_id")
    .selectAll("d")
    .select(["m.mail_from", "m.size"])
    .orderBy("d.created_at").orderBy("d.id")
    .execute();
}

/** Counts per state and the qshape table: pending rows per destination domain and age bucket. */
export async function queueStats(db: Db, now: number): Promise<QueueStats> {
  const states = await countByState(db);
  const pending = sum(PENDING_STATES.map((s) => states[s]));
  if (pending === 0) return { states, domains: [] };
  return { states, domains: await shapeQueue(db, now, useIndexes(pending, sum(Object.values(states)))) };
}

/** Pending rows per destination domain and age bucket, largest domain first. */
export async function shapeQueue(db: Db, now: number, indexed: boolean): Promise<DomainShape[]> {
  // Bucket i holds ages below AGE_BUCKET_MINUTES[i] (and at least the one before).
  const bucket = sql<number>`case ${sql.join(
    AGE_BUCKET_MINUTES.map((m, i) => sql`when created_at > ${now - m * 60_000} then ${i}`),
    sql` `,
  )} else ${AGE_BUCKET_MINUTES.length} end`;
  const rows = await db.selectFrom("deliveries")
    .select(["rcpt_domain", bucket.as("bucket"), (eb) => eb.fn.countAll<number>().as("n")])
    .where(col("state", indexed), "in", [...PENDING_STATES])
    // Grouped by the plain column SQLite would walk deliveries_domain and fetch every row.
    .groupBy([col("rcpt_domain", indexed), sql`bucket`])
    .execute();
  const byDomain = new Map<string, DomainShape>();
  for (const r of rows) {
    let d = byDomain.get(r.rcpt_domain);
    if (!d) byDomain.set(r.rcpt_domain, (d = { domain: r.rcpt_domain, total: 0, buckets: AGE_BUCKET_MINUTES.map(() => 0).concat(0) }));
    d.buckets[r.bucket]! += Number(r.n);
    d.total += Number(r.n);
  }
  return [...byDomain.values()].sort((a, b) => b.total - a.total || (a.domain < b.domain ? -1 : 1));
}

/**
 * Rows whose id starts with `prefix` (ids are case-sensitive), in id order, at most `limit`.
 * A range on the primary key, so a prefix costs the same as a full id.
 */
export async function findByIdPrefix(db: Db, prefix: string, limit: number): Promise<DeliveryRow[]> {
  return db.selectFrom("deliveries").selectAll()
    .where("id", ">=", prefix).where("id", "<", prefix + "\uffff")
    .orderBy("id").limit(limit).execute();
}

/** The message's envelope and the first HEADER_READ_LIMIT bytes of it (never the whole body). */
export async function findMessageHead(db: Db, messageId: string): Promise<MessageHead | undefined> {
  const row = await db.selectFrom("messages")
    .select(["mail_from", "size", "door", "auth_user", "received_at", sql<Uint8Array>`substr(body, 1, ${HEADER_READ_LIMIT})`.as("head")])
    .where("id", "=", messageId).executeTakeFirst();
  return row && { ...row, head: new Uint8Array(row.head) };
}

export async function listAttempts(db: Db, deliveryId: string): Promise<DeliveryAttemptRow[]> {
  return db.selectFrom("delivery_attempts").selectAll().where("delivery_id", "=", deliveryId).orderBy("at").orderBy("id").execute();
}

/** queued/deferred (or delivering with a lapsed lease) -> held. Returns false if it was not. */
export async function holdDelivery(db: Db, id: string, now: number): Promise<boolean> {
  const r = await db.updateTable("deliveries").set({ state: "held", lease_until: null, updated_at: now })
    .where("id", "=", id)
    .where((eb) => eb.or([eb("state", "in", ["queued", "deferred"]), lapsedLease(now)]))
    .executeTakeFirst();
  return r.numUpdatedRows > 0n;
}

/** held -> queued, due now. Returns false if it was not held. */
export async function releaseDelivery(db: Db, id: string, now: number): Promise<boolean> {
  const r = await db.updateTable("deliveries").set({ state: "queued", next_attempt_at: now, updated_at: now })
    .where("id", "=", id).where("state", "=", "held").executeTakeFirst();
  return r.numUpdatedRows > 0n;
}

/**
 * deferred and dead rows -> queued, due now; dead ones get a new lifetime from now. One id,
 * one domain, or (neither) all of them. Returns the ids requeued.
 */
export async function retryDeliveries(db: Db, scope: { id?: string; domain?: string }, now: number, lifetimeMs: number): Promise<string[]> {
  let q = db.updateTable("deliveries")
    .set((eb) => ({
      state: "queued",
      next_attempt_at: now,
      lease_until: null,
      updated_at: now,
      expires_at: eb.case().when("state", "=", "dead").then(now + lifetimeMs).else(eb.ref("expires_at")).end(),
    }))
    .where("state", "in", ["deferred", "dead"]);
  if (scope.id !== undefined) q = q.where("id", "=", scope.id);
  if (scope.domain !== undefined) q = q.where("rcpt_domain", "=", scope.domain);
  const rows = await q.returning("id").execute();
  return rows.map((r) => r.id).sort();
}

/** Every deferred row becomes due now (postqueue -f). Returns the ids. */
export async function flushDeferred(db: Db, now: number): Promise<string[]> {
  const rows = await db.updateTable("deliveries").set({ next_attempt_at: now, updated_at: now })
    .where("state", "=", "deferred").returning("id").execute();
  return rows.map((r) => r.id).sort();
}

/**
 * Deletes a delivery (not one under a live lease) and its attempts, then its message if no
 * other delivery needs it. Call in a write transaction. Returns null if nothing was deleted,
 * else whether the message went too.
 */
export async function deleteDelivery(trx: Db, row: Pick<DeliveryRow, "id" | "message_id">, now: number): Promise<{ messageDeleted: boolean } | null> {
  const r = await trx.deleteFrom("deliveries").where("id", "=", row.id)
    .where((eb) => eb.or([eb("state", "!=", "delivering"), lapsedLease(now)]))
    .executeTakeFirst();
  if (r.numDeletedRows === 0n) return null;
  // The foreign key cascades already; this covers a connection without foreign_keys = ON.
  await trx.deleteFrom("delivery_attempts").where("delivery_id", "=", row.id).execute();
  return { messageDeleted: await deleteOrphanMessage(trx, row.message_id) };
}

/** Deletes a message no delivery refers to any more. */
export async function deleteOrphanMessage(db: Db, messageId: string): Promise<boolean> {
  const r = await db.deleteFrom("messages").where("id", "=", messageId)
    .where((eb) => eb.not(eb.exists(eb.selectFrom("deliveries").select("id").where("message_id", "=", messageId))))
    .executeTakeFirst();
  return r.numDeletedRows > 0n;
}

/** Other deliveries of a message (shown when one of them is deleted). */
export async function countDeliveriesOf(db: Db, messageId: string): Promise<number> {
  const r = await db.selectFrom("deliveries").select((eb) => eb.fn.countAll<number>().as("n")).where("message_id", "=", messageId).executeTakeFirstOrThrow();
  return Number(r.n);
}

/** A delivering row nobody is working on: its lease ran out (the worker would take it again) or it has none. */
export function isLeaseLapsed(row: Pick<DeliveryRow, "state" | "lease_until">, now: number): boolean {
  return row.state === "delivering" && (row.lease_until === null || row.lease_until < now);
}

/**
 * Reading rows through an index costs about ten times a sequential read per row (measured:
 * 100,000 deferred rows, oldest first: 210 ms through deliveries_due, 20 ms by scanning the
 * table). Without ANALYZE statistics SQLite always takes the index, so choose here from the
 * counts: the index when it selects under an eighth of the table.
 */
export function useIndexes(matching: number, total: number): boolean {
  return matching * 8 < total;
}

/** A column as an index may use it, or wrapped in a unary + (same value) so that none is used. */
function col(name: "state" | "rcpt_domain", indexed: boolean): Expression<string> {
  return indexed ? sql.ref<string>(name) : sql<string>`+${sql.ref(name)}`;
}

/** The worker's own test for a row it may take again (queue.repository.ts claimDue), plus rows without a lease. */
function lapsedLease(now: number): Expression<SqlBool> {
  return sql<SqlBool>`(state = 'delivering' and (lease_until is null or lease_until < ${now}))`;
}

const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
