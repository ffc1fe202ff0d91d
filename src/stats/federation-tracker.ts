// Per peer domain counters (DESIGN.md §3, federation_server_stats). Every delivery attempt and
// every inbound message would be a write if counted in the database directly; instead they are
// added up in memory and flushed as deltas (col = col + delta), all domains in one transaction,
// every 30 s and on stop. A failed flush puts its deltas back, so nothing counted is lost while
// the process lives; a crash loses at most one interval, which is fine for statistics.
//
// last_error is the error of the last outbound attempt and is cleared by a success: the table
// has no column saying how the last attempt went, so an error kept after a success could not be
// told from a current one. Events in or out move last_active_at (never backwards).
import { sql, type Kysely } from "kysely";
import { withWriteTransaction } from "../db/open.ts";
import type { Database, FederationStatsRow } from "../db/schema.ts";
import { log } from "../log.ts";
import { isoTime } from "../util/time.ts";

export type PeerTransport = "https" | "http" | "smtp";

export interface FederationStatsView {
  domain: string;
  /** Outbound attempts: successes + failures. */
  attempts: number;
  successes: number;
  failures: number;
  https_ok: number;
  https_fail: number;
  http_ok: number;
  http_fail: number;
  smtp_ok: number;
  smtp_fail: number;
  /** Messages received from this peer. */
  inbound: number;
  /** Mean over outbound attempts (failed ones included), rounded; null before the first. */
  mean_latency_ms: number | null;
  last_latency_ms: number | null;
  /** Error of the last outbound attempt; null when it succeeded. */
  last_error: string | null;
  /** ISO 8601 time of the last event in or out; null if none. */
  last_active_at: string | null;
}

export interface FederationTracker {
  recordOutbound(domain: string, transport: PeerTransport, ok: boolean, latencyMs: number, error?: string): void;
  recordInbound(domain: string): void;
  /** Snapshot for `madmail federation status`: DB rows + unflushed memory, merged. */
  snapshot(): Promise<FederationStatsView[]>;
  /** Adds the in-memory deltas to the table in one transaction, then forgets them; on failure
   * they are kept for the next flush (and the error is thrown). Calls run one after another. */
  flush(): Promise<void>;
  /** Flushes every intervalMs (unref'd timer); a failed timed flush is logged and retried next time.
   * @default 30000 */
  start(intervalMs?: number): void;
  /** Stops the timer and flushes once more. */
  stop(): Promise<void>;
}

export interface FederationTrackerOptions {
  /** Clock for last_active_at. @default Date.now */
  now?: () => number;
}

/** Error texts are cut here: they come from remote servers. */
const MAX_ERROR = 500;

type Counter = "attempts" | "successes" | "failures" | `${PeerTransport}_${"ok" | "fail"}` | "inbound" | "latency_ms_total" | "latency_count";
const COUNTERS: readonly Counter[] = [
  "attempts", "successes", "failures", "https_ok", "https_fail", "http_ok", "http_fail", "smtp_ok", "smtp_fail",
  "inbound", "latency_ms_total", "latency_count",
];

interface Delta extends Record<Counter, number> {
  /** Set when the delta holds an outbound attempt: the values of the latest one. */
  last?: { latencyMs: number | null; error: string | null };
  lastActiveAt: number;
}

export function createFederationTracker(db: Kysely<Database>, options: FederationTrackerOptions = {}): FederationTracker {
  const now = options.now ?? Date.now;
  let pending = new Map<string, Delta>();
  let queue: Promise<unknown> = Promise.resolve();
  let timer: ReturnType<typeof setInterval> | undefined;

  const deltaFor = (domain: string): Delta | undefined => {
    const d = normalise(domain);
    if (!d) return undefined;
    let delta = pending.get(d);
    if (!delta) pending.set(d, (delta = emptyDelta()));
    delta.lastActiveAt = Math.max(delta.lastActiveAt, now());
    return delta;
  };
  /** Runs fn after every earlier flush or snapshot: a snapshot never sees a half-flushed state. */
  const serialise = <T>(fn: () => Promise<T>): Promise<T> => {
    const run = queue.then(fn);
    queue = run.catch(() => {});
    return run;
  };

  const flush = () =>
    serialise(async () => {
      if (!pending.size) return;
      const batch = pending;
      pending = new Map();
      try {
        await withWriteTransaction(db, async (trx) => {
          for (const [domain, delta] of batch) await upsertDelta(trx, domain, delta);
        });
      } catch (err) {
        // Events recorded meanwhile are newer: fold them over the batch, which goes back.
        for (const [domain, newer] of pending) batch.set(domain, merge(batch.get(domain), newer));
        pending = batch;
        throw err;
      }
    });

  return {
    recordOutbound(domain, transport, ok, latencyMs, error) {
      const d = deltaFor(domain);
      if (!d) return;
      d.attempts++;
      d[ok ? "successes" : "failures"]++;
      d[`${transport}_${ok ? "ok" : "fail"}`]++;
      const latency = Number.isFinite(latencyMs) && latencyMs >= 0 ? Math.round(latencyMs) : null;
      if (latency !== null) {
        d.latency_ms_total += latency;
        d.latency_count++;
      }
      d.last = { latencyMs: latency, error: ok ? null : cleanError(error) };
    },
    recordInbound(domain) {
      const d = deltaFor(domain);
      if (d) d.inbound++;
    },
    snapshot: () =>
      serialise(async () => {
        const rows = new Map((await selectStats(db)).map((r) => [r.domain, r]));
        for (const [domain, delta] of pending) rows.set(domain, applyDelta(rows.get(domain) ?? emptyRow(domain), delta));
        return toViews([...rows.values()]);
      }),
    flush,
    start(intervalMs = 30_000) {
      if (timer) clearInterval(timer);
      timer = setInterval(() => {
        flush().catch((err) => log.withTag("federation").warn(`flushing peer statistics failed, kept for the next try: ${(err as Error).message}`));
      }, intervalMs);
      timer.unref();
    },
    async stop() {
      if (timer) clearInterval(timer);
      timer = undefined;
      await flush();
    },
  };
}

/** The table as views, most recently active first (never-active rows last, by domain). */
export async function readFederationStats(db: Kysely<Database>): Promise<FederationStatsView[]> {
  return toViews(await selectStats(db));
}

// ---- private ----

function normalise(domain: string): string {
  return domain.trim().toLowerCase().replace(/\.$/, "");
}

function cleanError(error: string | undefined): string {
  const e = (error ?? "").replace(/[\x00-\x1f\x7f]+/g, " ").trim();
  return e ? e.slice(0, MAX_ERROR) : "failed";
}

function emptyDelta(): Delta {
  const d = { lastActiveAt: 0 } as Delta;
  for (const c of COUNTERS) d[c] = 0;
  return d;
}

/** older followed by newer. */
function merge(older: Delta | undefined, newer: Delta): Delta {
  if (!older) return newer;
  for (const c of COUNTERS) older[c] += newer[c];
  if (newer.last) older.last = newer.last;
  older.lastActiveAt = Math.max(older.lastActiveAt, newer.lastActiveAt);
  return older;
}

function emptyRow(domain: string): FederationStatsRow {
  const row = { domain, last_latency_ms: null, last_error: null, last_active_at: null } as FederationStatsRow;
  for (const c of COUNTERS) row[c] = 0;
  return row;
}

/** What the row becomes after upsertDelta, computed in memory (for snapshots). */
function applyDelta(row: FederationStatsRow, d: Delta): FederationStatsRow {
  const out = { ...row };
  for (const c of COUNTERS) out[c] += d[c];
  if (d.last) {
    out.last_latency_ms = d.last.latencyMs ?? out.last_latency_ms;
    out.last_error = d.last.error;
  }
  out.last_active_at = Math.max(out.last_active_at ?? 0, d.lastActiveAt);
  return out;
}

async function upsertDelta(trx: Kysely<Database>, domain: string, d: Delta): Promise<void> {
  const counters = Object.fromEntries(COUNTERS.map((c) => [c, d[c]])) as Record<Counter, number>;
  await trx
    .insertInto("federation_server_stats")
    .values({ domain, ...counters, last_latency_ms: d.last?.latencyMs ?? null, last_error: d.last?.error ?? null, last_active_at: d.lastActiveAt })
    .onConflict((oc) =>
      oc.column("domain").doUpdateSet((eb) => ({
        ...Object.fromEntries(COUNTERS.map((c) => [c, eb(`federation_server_stats.${c}`, "+", eb.ref(`excluded.${c}`))])),
        // Without an outbound attempt in this delta, the last latency and error stay as they are.
        ...(d.last && {
          last_latency_ms: sql<number | null>`coalesce(excluded.last_latency_ms, federation_server_stats.last_latency_ms)`,
          last_error: eb.ref("excluded.last_error"),
        }),
        // max(): a clock set back must not make an active peer look idle.
        last_active_at: sql<number>`max(coalesce(federation_server_stats.last_active_at, 0), excluded.last_active_at)`,
      })),
    )
    .execute();
}

async function selectStats(db: Kysely<Database>): Promise<FederationStatsRow[]> {
  return db.selectFrom("federation_server_stats").selectAll().execute();
}

function toViews(rows: FederationStatsRow[]): FederationStatsView[] {
  return rows
    .sort((a, b) => (b.last_active_at ?? -1) - (a.last_active_at ?? -1) || (a.domain < b.domain ? -1 : a.domain > b.domain ? 1 : 0))
    .map((r) => ({
      domain: r.domain,
      attempts: r.attempts,
      successes: r.successes,
      failures: r.failures,
      https_ok: r.https_ok,
      https_fail: r.https_fail,
      http_ok: r.http_ok,
      http_fail: r.http_fail,
      smtp_ok: r.smtp_ok,
      smtp_fail: r.smtp_fail,
      inbound: r.inbound,
      mean_latency_ms: r.latency_count > 0 ? Math.round(r.latency_ms_total / r.latency_count) : null,
      last_latency_ms: r.last_latency_ms,
      last_error: r.last_error,
      last_active_at: isoTime(r.last_active_at),
    }));
}
