// Group commit: writes that arrive while a commit is running are committed together in the
// next transaction, so many acknowledged messages share one fsync (synchronous=FULL) instead of
// paying one each. Callers await their own write; it resolves only after COMMIT returned.
import type { Kysely } from "kysely";
import type { Database } from "./schema.ts";
import { withWriteTransaction, type Db, type WriteOptions } from "./open.ts";

export type WriteOp = (trx: Kysely<Database>) => Promise<void>;

export interface WriteBatcher {
  /** `durable: false` for bookkeeping that may be lost with power (see WriteOptions). */
  run(op: WriteOp, opts?: WriteOptions): Promise<void>;
  /** Resolves when everything queued so far is committed. */
  drain(): Promise<void>;
}

interface Pending {
  op: WriteOp;
  durable: boolean;
  resolve(): void;
  reject(err: unknown): void;
}

export function createWriteBatcher(db: Db): WriteBatcher {
  let queue: Pending[] = [];
  let running: Promise<void> | null = null;

  async function loop(): Promise<void> {
    while (queue.length) {
      const batch = queue;
      queue = [];
      try {
        // One durable write makes the whole batch durable.
        await withWriteTransaction(db, async (trx) => {
          for (const p of batch) await p.op(trx);
        }, { durable: batch.some((p) => p.durable) });
        for (const p of batch) p.resolve();
      } catch {
        // One bad write must not fail its neighbours: retry each alone.
        for (const p of batch) {
          await withWriteTransaction(db, p.op, { durable: p.durable }).then(p.resolve, p.reject);
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
      while (running) await running;
    },
  };
}
