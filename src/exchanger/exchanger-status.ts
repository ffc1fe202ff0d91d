// Monitoring of exchangers: what is held for them, and whether they went quiet.
import type { Db } from "../db/open.ts";
import type { ExchangerRow } from "../db/schema.ts";

/**
 * An enabled exchanger that should show activity (it pulls from us: mode pull; or we poll it:
 * it has a remote token) is stale when nothing happened for 3 poll intervals.
 */
export function isStale(e: ExchangerRow, now = Date.now()): boolean {
  if (e.enabled !== 1) return false;
  const expects = e.mode === "pull" || e.remote_token !== null;
  if (!expects) return false;
  const last = Math.max(e.mode === "pull" ? (e.last_pull_at ?? 0) : 0, e.remote_token !== null ? (e.last_poll_at ?? 0) : 0, e.updated_at);
  return now - last > 3 * e.poll_interval * 1000;
}

export interface HeldSummary {
  held: number;
  oldestQueuedAt: number | null;
}

/** Mail waiting for this exchanger to pull it (held or handed out and not yet acknowledged). */
export async function heldFor(db: Db, name: string): Promise<HeldSummary> {
  const row = await db.selectFrom("deliveries")
    .select((eb) => [eb.fn.countAll<number>().as("n"), eb.fn.min("created_at").as("oldest")])
    .where("route", "=", `exchanger:${name}`).where("state", "in", ["deferred", "delivering"])
    .executeTakeFirst();
  return { held: Number(row?.n ?? 0), oldestQueuedAt: (row?.oldest as number | null) ?? null };
}
