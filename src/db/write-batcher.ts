// Group commit: writes that arrive while a commit is running are committed together in the
// next transaction, so many acknowledged messages share one fsync instead of paying one each.
// Callers await their own write; it resolves only after COMMIT returned and, for a durable
// write, after the commit is on disk.
//
// Durable without blocking the event loop: libsql runs statements on the calling thread, and
// a COMMIT under synchronous=FULL waits there for the fsync of the WAL (about 15% of a busy
// relay's main thread). With `walPath`, every batch commits under synchronous=NORMAL — in WAL
// mode that keeps the file consistent through a crash (checkpoints still sync) but leaves the
// last commits in the page cache — and a durable batch then waits for an fdatasync of the WAL
// file on the thread pool before it resolves: the guarantee of FULL, whose only difference is
// that same sync done inside COMMIT. Concurrent batches share one sync (an fsync started
// after their COMMIT returned covers them).
import { promises as fsp } from "node:fs";
import type { Kysely } from "kysely";
import type { Database } from "./schema.ts";
import { withWriteTransaction, type Db, type WriteOptions } from "./open.ts";
import { createGroupFsync } from "../store/_dir-fsync.ts";

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

export interface WriteBatcherOptions {
  /** The state file's WAL (`<file>-wal`): durable batches sync it after COMMIT, off the event loop. */
  walPath?: string;
}

export function createWriteBatcher(db: Db, opts: WriteBatcherOptions = {}): WriteBatcher {
  let queue: Pending[] = [];
  let running: Promise<void> | null = null;
  const walPath = opts.walPath;
  const groupSync = createGroupFsync(syncWal);

  async function loop(): Promise<void> {
    while (queue.length) {
      const batch = queue;
      queue = [];
      try {
        // One durable write makes the whole batch durable.
        const durable = batch.some((p) => p.durable);
        await withWriteTransaction(db, async (trx) => {
          for (const p of batch) await p.op(trx);
        }, { durable: durable && !walPath });
        if (durable && walPath) {
          // The next batch commits meanwhile; this one resolves when its commit is on disk.
          void groupSync(walPath).then(() => batch.forEach((p) => p.resolve()), (err) => batch.forEach((p) => p.reject(err)));
          continue;
        }
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
      if (walPath) await groupSync(walPath);
    },
  };
}

/** fdatasync of the WAL. No WAL means it was checkpointed into the main file and removed: sync that. */
async function syncWal(walPath: string): Promise<void> {
  const handle = await fsp.open(walPath, "r").catch((err: NodeJS.ErrnoException) => {
    if (err.code === "ENOENT") return fsp.open(walPath.replace(/-wal$/, ""), "r");
    throw err;
  });
  try {
    await handle.datasync();
  } finally {
    await handle.close();
  }
}
