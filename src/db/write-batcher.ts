// Group commit: writes that arrive while a commit is running are committed together in the
// next transaction, so many acknowledged messages share one COMMIT and one fsync instead of
// paying one each. Callers await their own write; a durable one resolves only once it is on
// disk.
import type { Kysely } from "kysely";
import type { Database } from "./schema.ts";
import { withWriteTransaction, type Db, type WriteOptions } from "./open.ts";

export type WriteOp = (trx: Kysely<Database>) => Promise<void>;

export interface WriteBatcher {
  /** `durable: false` for bookkeeping that may be lost with power (see WriteOptions). */
  run(op: WriteOp, opts?: WriteOptions): Promise<void>;
  /** Resolves when everything queued so far is committed (and synced, if durable). */
  drain(): Promise<void>;
}

export interface WriteBatcherOptions {
  /**
   * Makes what has been committed so far durable (fdatasync of the WAL, off the event loop).
   * Given: every batch commits without waiting for the disk (synchronous=NORMAL), durable
   * writes resolve after the next sync, and the next batch commits while the disk works: the
   * event loop never blocks on fsync, and one fsync covers every batch committed before it.
   * Absent: a batch holding a durable write commits with synchronous=FULL.
   */
  syncWal?: () => Promise<void>;
}

interface Pending {
  op: WriteOp;
  durable: boolean;
  resolve(): void;
  reject(err: unknown): void;
}

export function createWriteBatcher(db: Db, opts: WriteBatcherOptions = {}): WriteBatcher {
  const { syncWal } = opts;
  let queue: Pending[] = [];
  let running: Promise<void> | null = null;
  const syncing = new Set<Promise<void>>();

  /** The batch is committed: resolve it, its durable writes once the WAL is synced. */
  function committed(batch: Pending[]): void {
    const waiting = syncWal ? batch.filter((p) => p.durable) : [];
    for (const p of batch) if (!syncWal || !p.durable) p.resolve();
    if (!waiting.length) return;
    const s = syncWal!().then(
      () => waiting.forEach((p) => p.resolve()),
      // The data may not be on disk: the sender must not be told it is.
      (err) => waiting.forEach((p) => p.reject(err)),
    ).finally(() => syncing.delete(s));
    syncing.add(s);
  }

  // Without syncWal, one durable write makes the whole batch durable (synchronous=FULL).
  const durable = (ps: Pending[]) => !syncWal && ps.some((p) => p.durable);

  async function loop(): Promise<void> {
    while (queue.length) {
      const batch = queue;
      queue = [];
      try {
        await withWriteTransaction(db, async (trx) => {
          for (const p of batch) await p.op(trx);
        }, { durable: durable(batch) });
        committed(batch);
      } catch {
        // One bad write must not fail its neighbours: retry each alone.
        for (const p of batch) {
          await withWriteTransaction(db, p.op, { durable: durable([p]) }).then(() => committed([p]), p.reject);
        }
      }
    }
    running = null;
  }

  return {
    run(op, opts = {}) {
      return new Promise<void>((resolve, reject) => {
        queue.push({ op, durable: opts.durable !== false, resolve, reject });
        // setImmediate lets the writes of the current event-loop turn join this batch.
        running ??= new Promise<void>((r) => setImmediate(r)).then(loop);
      });
    },
    async drain() {
      while (running || syncing.size) {
        if (running) await running;
        await Promise.all(syncing);
      }
    },
  };
}
