// The delivery side of the queue: enqueue, claim with a lease, record outcomes. Every update
// after a claim is conditioned on the lease, so a row that a crashed or slow worker lost (its
// lease ran out and someone else claimed it), or that an admin changed, is never overwritten.
import { sql, type Insertable, type Kysely } from "kysely";
import type { Database, DeliveryRow, DeliveryState, MessageRow } from "../db/schema.ts";
import { changedRows, firstRow, prepareQuery } from "../db/prepared.ts";
import type { Db } from "../db/open.ts";
import { newQueueId } from "./ids.ts";

export interface NewQueuedMessage {
  mailFrom: string;
  body: Uint8Array;
  door: string;
  authUser: string | null;
  /** Recipients grouped by destination domain. */
  byDomain: Map<string, string[]>;
}

/** The rows as stored. */
export interface Enqueued {
  message: MessageRow;
  deliveries: DeliveryRow[];
}

const insertMessage = prepareQuery((db, p: Insertable<Database["messages"]>) => db.insertInto("messages").values({
  id: p.id, mail_from: p.mail_from, body: p.body, size: p.size, door: p.door, auth_user: p.auth_user, received_at: p.received_at,
}));
const insertDelivery = prepareQuery((db, p: DeliveryRow) => db.insertInto("deliveries").values({
  id: p.id, message_id: p.message_id, rcpt_domain: p.rcpt_domain, rcpts: p.rcpts, state: p.state, route: p.route, tries: p.tries,
  next_attempt_at: p.next_attempt_at, lease_until: p.lease_until, last_error: p.last_error, created_at: p.created_at, updated_at: p.updated_at,
  expires_at: p.expires_at, rerouted_to: p.rerouted_to,
}));

/**
 * Stores the body once and one delivery row per domain; call inside the caller's transaction.
 * `claimed` (domain -> lease) stores those domains' rows already claimed by the caller's worker
 * (state delivering with that lease), to be delivered right after the commit without a claim pass.
 */
export async function enqueueMessage(
  trx: Kysely<Database>, m: NewQueuedMessage, lifetimeMs: number, now = Date.now(), claimed?: ReadonlyMap<string, number>,
): Promise<Enqueued> {
  const messageId = newQueueId(now);
  const message: MessageRow = {
    id: messageId, mail_from: m.mailFrom, body: m.body, size: m.body.length, door: m.door, auth_user: m.authUser, received_at: now,
  };
  await insertMessage(trx, message);
  const deliveries: DeliveryRow[] = [];
  for (const [domain, rcpts] of m.byDomain) {
    const lease = claimed?.get(domain) ?? null;
    const row: DeliveryRow = {
      id: newQueueId(now), message_id: messageId, rcpt_domain: domain, rcpts: JSON.stringify(rcpts), state: lease === null ? "queued" : "delivering",
      route: null, tries: 0, next_attempt_at: now, lease_until: lease, last_error: null, created_at: now, updated_at: now, expires_at: now + lifetimeMs,
      rerouted_to: null,
    };
    await insertDelivery(trx, row);
    deliveries.push(row);
  }
  return { message, deliveries };
}

export interface Claimed {
  delivery: DeliveryRow;
  /** The lease this worker holds; every later update must present it. */
  lease: number;
}

/** Due rows of one state, oldest first; `busy` domains (at their cap) left out. */
function dueQuery(db: Kysely<Database>, p: { state: DeliveryState; now: number; limit: number }, busy: string[] = []) {
  let q = db.selectFrom("deliveries").selectAll().where("state", "=", p.state).where("next_attempt_at", "<=", p.now);
  if (busy.length) q = q.where("rcpt_domain", "not in", busy);
  return q.orderBy("next_attempt_at").limit(p.limit);
}

/** Rows whose lease ran out; `busy` domains left out. */
function expiredQuery(db: Kysely<Database>, p: { now: number; limit: number }, busy: string[] = []) {
  let q = db.selectFrom("deliveries").selectAll().where("state", "=", "delivering").where("lease_until", "<", p.now);
  if (busy.length) q = q.where("rcpt_domain", "not in", busy);
  return q.limit(p.limit);
}

// Prepared for the usual case, no domain at its cap; with a NOT IN list, built each time.
const dueRows = prepareQuery(dueQuery);
const expiredRows = prepareQuery(expiredQuery);
const markDelivering = prepareQuery((db, p: { id: string; lease: number; now: number }) => db.updateTable("deliveries")
  .set({ state: "delivering", lease_until: p.lease, updated_at: p.now }).where("id", "=", p.id));

export interface ClaimOptions {
  leaseMs: number;
  /** Ids this worker is delivering now: never taken back, however long their attempt runs. */
  holding?: { has(id: string): boolean };
  /** Rows this worker already holds, per domain. */
  inFlight: ReadonlyMap<string, number>;
  perDomain: number;
  /**
   * Also look for rows whose lease ran out. Leases last at least 30 s and run out only when
   * a delivery hangs past its timeouts, so the worker asks about once a second, not on every
   * pass: that scan reads every row in flight.
   */
  expired: boolean;
  /**
   * Set to true when due rows may have been left unclaimed because their domain was at its cap;
   * `domains` (when given) gets those domains.
   */
  counts?: { capped: boolean; domains?: Set<string> };
}

/**
 * Claims up to `limit` due rows (queued/deferred and due, or, with `expired`, delivering with
 * an expired lease) without taking more than `perDomain` rows in flight for one domain
 * (`inFlight` counts what this worker already holds). Call in a write transaction.
 */
export async function claimDue(trx: Kysely<Database>, limit: number, opts: ClaimOptions, now = Date.now()): Promise<Claimed[]> {
  if (limit <= 0) return [];
  const { inFlight, perDomain } = opts;
  const busy = [...inFlight].filter(([, n]) => n >= perDomain).map(([d]) => d);
  // Rows of a domain at its cap are not even read: whether it has any due is not known here.
  if (busy.length && opts.counts) {
    opts.counts.capped = true;
    for (const d of busy) opts.counts.domains?.add(d);
  }
  // Room for rows skipped by the per-domain cap, when a domain can reach it in this pass: rows
  // read and then skipped cost nearly what claimed ones do.
  const scan = limit + Math.max(0, ...inFlight.values()) <= perDomain ? limit : limit * 4;
  // Separate range scans on (state, next_attempt_at): an OR across states cannot use the index.
  const due = async (state: "queued" | "deferred") => {
    const p = { state, now, limit: scan };
    return busy.length ? dueQuery(trx, p, busy).execute() : (await dueRows(trx, p)).rows;
  };
  const expired = async () => {
    if (!opts.expired) return [];
    const p = { now, limit: scan };
    return busy.length ? expiredQuery(trx, p, busy).execute() : (await expiredRows(trx, p)).rows;
  };
  const rows = [...(await due("queued")), ...(await due("deferred")), ...(await expired())]
    .sort((a, b) => a.next_attempt_at - b.next_attempt_at);
  const counts = new Map(inFlight);
  const lease = now + opts.leaseMs;
  const out: Claimed[] = [];
  for (const row of rows) {
    if (out.length >= limit) break;
    if (opts.holding?.has(row.id)) continue;
    const n = counts.get(row.rcpt_domain) ?? 0;
    if (n >= perDomain) {
      if (opts.counts) {
        opts.counts.capped = true;
        opts.counts.domains?.add(row.rcpt_domain);
      }
      continue;
    }
    counts.set(row.rcpt_domain, n + 1);
    await markDelivering(trx, { id: row.id, lease, now });
    out.push({ delivery: { ...row, state: "delivering", lease_until: lease }, lease });
  }
  return out;
}

/** The earliest time a row becomes claimable (to sleep until then), or null when none waits. */
export async function nextDueAt(db: Db): Promise<number | null> {
  const waiting = await db.selectFrom("deliveries").select((eb) => eb.fn.min("next_attempt_at").as("at"))
    .where("state", "in", ["queued", "deferred"]).executeTakeFirst();
  const leased = await db.selectFrom("deliveries").select((eb) => eb.fn.min("lease_until").as("at"))
    .where("state", "=", "delivering").executeTakeFirst();
  const times = [waiting?.at, leased?.at].filter((t): t is number => typeof t === "number");
  return times.length ? Math.min(...times) : null;
}

const selectMessage = prepareQuery((db, p: { id: string }) => db.selectFrom("messages").selectAll().where("id", "=", p.id));
const selectMessageSize = prepareQuery((db, p: { id: string }) => db.selectFrom("messages").select("size").where("id", "=", p.id));

/** A queued message's size in bytes (0 when it is gone), without reading its body. */
export async function messageSize(db: Db, id: string): Promise<number> {
  return (await firstRow(selectMessageSize, db, { id }))?.size ?? 0;
}

export async function loadMessage(db: Db, id: string): Promise<MessageRow | undefined> {
  const row = await firstRow(selectMessage, db, { id });
  // libsql hands BLOBs out as ArrayBuffer.
  return row && { ...row, body: toBytes(row.body) };
}

function toBytes(v: unknown): Uint8Array {
  if (v instanceof Uint8Array) return v;
  if (v instanceof ArrayBuffer) return new Uint8Array(v);
  throw new TypeError(`unexpected BLOB value: ${Object.prototype.toString.call(v)}`);
}

export type Outcome = (
  | { state: "delivered"; route: string }
  /** `rcpts`: only these are still to be delivered (the peer took the others). */
  | { state: "deferred"; route: string | null; error: string; nextAttemptAt: number; rcpts?: string[] }
  | { state: "dead"; route: string | null; error: string }
) & { /** Delayed reroute: the fallback exchanger this row now goes through. */ reroutedTo?: string };

const settle = prepareQuery((db, p: {
  id: string; lease: number; state: DeliveryState; route: string | null; last_error: string | null; next_attempt_at: number; now: number;
  /** null keeps the row's own. */
  rerouted_to: string | null;
  /** null keeps the row's own. */
  rcpts: string | null;
}) => db.updateTable("deliveries").set({
  state: p.state, route: p.route, tries: sql`tries + 1`, last_error: p.last_error, next_attempt_at: p.next_attempt_at, lease_until: null,
  updated_at: p.now, rerouted_to: sql`coalesce(${p.rerouted_to}, rerouted_to)`, rcpts: sql`coalesce(${p.rcpts}, rcpts)`,
}).where("id", "=", p.id).where("state", "=", "delivering").where("lease_until", "=", p.lease));

/** Applies an outcome if the lease is still ours; returns false if the row was taken from us. */
export async function settleDelivery(trx: Kysely<Database>, c: Claimed, outcome: Outcome, now = Date.now()): Promise<boolean> {
  return (await changedRows(settle, trx, {
    id: c.delivery.id,
    lease: c.lease,
    state: outcome.state,
    route: outcome.route ?? c.delivery.route,
    last_error: outcome.state === "delivered" ? null : outcome.error.slice(0, 1000),
    next_attempt_at: outcome.state === "deferred" ? outcome.nextAttemptAt : c.delivery.next_attempt_at,
    now,
    rerouted_to: outcome.reroutedTo ?? null,
    rcpts: outcome.state === "deferred" && outcome.rcpts ? JSON.stringify(outcome.rcpts) : null,
  })) > 0n;
}

export interface AttemptRecord {
  deliveryId: string;
  transport: string;
  endpoint: string;
  outcome: "delivered" | "temporary" | "permanent" | "note";
  detail: string | null;
  ms: number | null;
  at?: number;
}

const insertAttempt = prepareQuery((db, p: Insertable<Database["delivery_attempts"]>) => db.insertInto("delivery_attempts").values({
  delivery_id: p.delivery_id, at: p.at, transport: p.transport, endpoint: p.endpoint, outcome: p.outcome, detail: p.detail, ms: p.ms,
}));

export async function recordAttempts(trx: Kysely<Database>, attempts: AttemptRecord[]): Promise<void> {
  for (const a of attempts) {
    await insertAttempt(trx, {
      delivery_id: a.deliveryId, at: a.at ?? Date.now(), transport: a.transport, endpoint: a.endpoint, outcome: a.outcome,
      detail: a.detail?.slice(0, 1000) ?? null, ms: a.ms,
    });
  }
}

/**
 * Extends the lease of a row still being delivered; returns false when the row is no longer
 * ours. The caller then holds the new lease (`c.lease`), which its outcome must present.
 */
export async function renewLease(trx: Kysely<Database>, c: Claimed, until: number): Promise<boolean> {
  const r = await trx.updateTable("deliveries").set({ lease_until: until })
    .where("id", "=", c.delivery.id).where("state", "=", "delivering").where("lease_until", "=", c.lease).executeTakeFirst();
  if (Number(r.numUpdatedRows) === 0) return false;
  c.lease = until;
  c.delivery = { ...c.delivery, lease_until: until };
  return true;
}

/** On shutdown: give back our claims so that the next start retries them at once. */
export async function releaseLeases(trx: Kysely<Database>, leases: Claimed[], now = Date.now()): Promise<void> {
  for (const c of leases) {
    await trx.updateTable("deliveries").set({ state: "deferred", lease_until: null, next_attempt_at: now, updated_at: now })
      .where("id", "=", c.delivery.id).where("state", "=", "delivering").where("lease_until", "=", c.lease).execute();
  }
}

/** At start: every row left in state delivering by a dead predecessor becomes due now. */
export async function reclaimOrphans(db: Db, now = Date.now()): Promise<number> {
  const r = await db.updateTable("deliveries").set({ state: "deferred", lease_until: null, next_attempt_at: now, updated_at: now })
    .where("state", "=", "delivering").executeTakeFirst();
  return Number(r.numUpdatedRows);
}

/**
 * A destination answered again: bring its other deferred rows forward, spaced `spacingMs`
 * apart (capped at a minute), instead of leaving them to their own next attempt or
 * releasing them all in the same second.
 */
export async function expediteDomain(trx: Kysely<Database>, domain: string, now: number, spacingMs: number): Promise<number> {
  const rows = await trx.selectFrom("deliveries").select(["id", "next_attempt_at"])
    .where("rcpt_domain", "=", domain).where("state", "=", "deferred").where("next_attempt_at", ">", now)
    .orderBy("next_attempt_at").limit(1000).execute();
  let i = 1;
  for (const r of rows) {
    const due = now + Math.min(i++ * spacingMs, 60_000);
    if (due < r.next_attempt_at) {
      await trx.updateTable("deliveries").set({ next_attempt_at: due }).where("id", "=", r.id).where("state", "=", "deferred").execute();
    }
  }
  return rows.length;
}

/** Forgets delivered rows older than `before`, then messages no delivery refers to any more. */
export async function pruneDelivered(trx: Kysely<Database>, before: number): Promise<number> {
  const r = await trx.deleteFrom("deliveries").where("state", "=", "delivered").where("updated_at", "<", before).executeTakeFirst();
  await trx.deleteFrom("messages")
    .where((eb) => eb.not(eb.exists(eb.selectFrom("deliveries").select("id").whereRef("deliveries.message_id", "=", "messages.id"))))
    .execute();
  return Number(r.numDeletedRows);
}
