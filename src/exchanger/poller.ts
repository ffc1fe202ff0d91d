// The server's own pull client (DESIGN.md section 6): for every enabled exchanger holding our
// token at the partner (exchangers.remote_token), long-poll its pull endpoint, feed what comes
// through the accept pipeline, then rest `poll_interval` seconds after an empty answer or an
// error; pull again at once while mail keeps coming. Each round is recorded in the exchanger's
// row (last_poll_at, last_error) for `madmail exchanger list` and the panel.
// The table is re-read every few seconds, and at once when another process committed
// (PRAGMA data_version), so enable/disable/set/remove apply without a restart.
import type { Db } from "../db/open.ts";
import type { ExchangerRow } from "../db/schema.ts";
import { log } from "../log.ts";
import type { Core } from "../server.ts";
import { drainPartner, verifyTlsFor, type PullCore } from "./pull-client.ts";

export interface PollerDeps {
  core: PullCore & { state: Pick<Core["state"], "dataVersion"> };
  db: Db;
  /** Seconds a pull may wait at the partner for mail to arrive. @default 30 */
  wait?: number;
  /** Full re-read of the exchangers table. @default 5000 */
  rescanMs?: number;
}

export interface Pollers {
  /** Aborts the pulls under way (what was accepted stays) and resolves when every loop ended. */
  stop(): Promise<void>;
}

interface Loop {
  /** URL and token the loop was started with: a change restarts it. */
  key: string;
  /** Read on each rest, so a new poll_interval applies without a restart. */
  interval: number;
  abort: AbortController;
  done: Promise<void>;
}

const tag = () => log.withTag("poller");

export function startPollers(deps: PollerDeps): Pollers {
  const loops = new Map<string, Loop>();
  const rescanMs = deps.rescanMs ?? 5000;
  let stopped = false;
  let scanning: Promise<void> | null = null;
  let version = Number.NaN;
  let scannedAt = 0;

  const scan = async (): Promise<void> => {
    version = deps.core.state.dataVersion();
    scannedAt = Date.now();
    const rows = await listPolled(deps.db);
    if (stopped) return;
    const wanted = new Map(rows.map((r) => [r.name, r]));
    for (const [name, loop] of loops) {
      const row = wanted.get(name);
      if (row && loopKey(row) === loop.key) {
        loop.interval = row.poll_interval;
        continue;
      }
      loops.delete(name);
      loop.abort.abort();
      tag().info(`exchanger ${name}: ${row ? "URL or token changed, restarting its poll" : "no longer polled (disabled, removed or token cleared)"}`);
    }
    for (const row of rows) if (!loops.has(row.name)) loops.set(row.name, startLoop(row));
  };

  const check = () => {
    if (stopped || scanning) return;
    if (deps.core.state.dataVersion() === version && Date.now() - scannedAt < rescanMs) return;
    scanning = scan()
      .catch((err) => tag().warn(`reading exchangers: ${(err as Error).message}`))
      .finally(() => (scanning = null));
  };

  function startLoop(row: ExchangerRow): Loop {
    const loop: Loop = { key: loopKey(row), interval: row.poll_interval, abort: new AbortController(), done: Promise.resolve() };
    tag().info(`exchanger ${row.name}: polling ${row.url} (rest ${row.poll_interval}s after an empty answer)`);
    loop.done = runLoop(row, loop).catch((err) => {
      tag().error(`exchanger ${row.name}: poll loop failed: ${(err as Error).stack ?? err}`);
      // Forgotten, so that the next scan starts it afresh.
      if (loops.get(row.name) === loop) loops.delete(row.name);
    });
    return loop;
  }

  async function runLoop(row: ExchangerRow, loop: Loop): Promise<void> {
    const { signal } = loop.abort;
    let lastError: string | null = row.last_error;
    while (!signal.aborted) {
      const { config } = await deps.core.snapshot.get();
      const r = await drainPartner({
        baseUrl: row.url, token: row.remote_token!, protocol: "madmail", wait: deps.wait ?? 30, max: 50,
        // A bound on one drain, so that a setting change (TLS verification) is seen now and then.
        maxTimeMs: 10 * 60_000, core: deps.core, signal, verifyTls: safeVerify(row.url, config["delivery.tls_verify"]),
        onRound: (round) => {
          if (signal.aborted) return;
          lastError = null;
          if (round.messages) tag().info(`exchanger ${row.name}: pulled ${round.messages}, acknowledged ${round.acked}`);
          return recordPoll(deps.db, row.name, { last_poll_at: Date.now(), last_error: null });
        },
      });
      if (signal.aborted) break;
      if (r.error) {
        // Said once per distinct error, not every poll_interval.
        if (r.error.message !== lastError) tag().warn(`exchanger ${row.name}: ${r.error.message}`);
        lastError = r.error.message;
        await recordPoll(deps.db, row.name, { last_error: r.error.message });
      }
      if (r.error || r.drained) await rest(loop.interval * 1000, signal);
    }
  }

  const timer = setInterval(check, Math.min(1000, rescanMs));
  timer.unref();
  check();

  return {
    async stop() {
      if (stopped) return;
      stopped = true;
      clearInterval(timer);
      for (const loop of loops.values()) loop.abort.abort();
      await scanning;
      await Promise.all([...loops.values()].map((l) => l.done));
      loops.clear();
    },
  };
}

// ---------------------------------------------------------------------------------------------
// internal

const loopKey = (row: ExchangerRow) => `${row.url}\n${row.remote_token}`;

/** A bad stored URL must not stop the loop from reporting it: drainPartner says what is wrong. */
function safeVerify(url: string, mode: "auto" | "always" | "never"): boolean | undefined {
  try {
    return verifyTlsFor(url, mode);
  } catch {
    return undefined;
  }
}

function rest(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(t);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const t = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
  });
}

// Repository queries of this area (they touch only the poll columns, not updated_at: a poll is
// not a change of the entry).

async function listPolled(db: Db): Promise<ExchangerRow[]> {
  return db.selectFrom("exchangers").selectAll().where("enabled", "=", 1).where("remote_token", "is not", null).where("remote_token", "!=", "").orderBy("name").execute();
}

async function recordPoll(db: Db, name: string, values: { last_poll_at?: number; last_error: string | null }): Promise<void> {
  try {
    await db.updateTable("exchangers").set(values).where("name", "=", name).execute();
  } catch (err) {
    tag().warn(`exchanger ${name}: recording the poll: ${(err as Error).message}`);
  }
}
