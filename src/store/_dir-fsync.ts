// Group commit for directory fsyncs.
//
// A Maildir delivery is durable once the file's data is fsynced AND the directory entry that
// the rename created in new/ is fsynced (POSIX makes no promise about a directory entry until
// the directory itself is fsynced). The file fsyncs are independent and run concurrently; the
// directory fsync is the same work for everyone who renamed into that directory, so
// concurrent deliveries share it.
//
// The one rule that makes sharing safe: an fsync covers a rename only if the rename had
// completed before the fsync started. Therefore, per directory:
//   - no fsync running: the caller's rename is already done, so start one now and wait for it;
//   - an fsync running: it may have started before the caller's rename, so the caller must not
//     join it. It joins the NEXT fsync instead, which starts only when the running one ends,
//     i.e. after every rename of every caller who joined it.
// So a caller waits at most for the end of one fsync plus one full fsync, and at any moment
// each directory has at most one fsync running and one batch waiting for the next.
import { constants, promises as fsp } from "node:fs";

/** Resolves once a directory fsync that started after this call has completed. */
export type GroupFsync = (dir: string) => Promise<void>;

interface DirState {
  /** The fsync now running, if any. */
  running: Promise<void> | null;
  /** Callers waiting for the fsync after `running`; created by the first of them. */
  next: { promise: Promise<void>; resolve: () => void; reject: (err: unknown) => void } | null;
}

/**
 * Returns `sync(dir)`: call it after your rename (or unlink) in `dir` has completed; it
 * resolves when an fsync of `dir` that began after the call has succeeded, and rejects if
 * that fsync failed.
 */
export function createGroupFsync(fsyncDir: (dir: string) => Promise<void> = fsyncDirectory): GroupFsync {
  const dirs = new Map<string, DirState>();

  function start(dir: string, state: DirState): Promise<void> {
    const run = fsyncDir(dir).finally(() => {
      // Runs before anyone awaiting `run` resumes. Everyone in `next` renamed before now.
      state.running = null;
      const waiting = state.next;
      state.next = null;
      if (waiting) start(dir, state).then(waiting.resolve, waiting.reject);
      else dirs.delete(dir); // idle: forget the directory, the map stays small
    });
    state.running = run;
    return run;
  }

  return function sync(dir: string): Promise<void> {
    let state = dirs.get(dir);
    if (!state) {
      state = { running: null, next: null };
      dirs.set(dir, state);
    }
    if (!state.running) return start(dir, state);
    state.next ??= _deferred();
    return state.next.promise;
  };
}

/** fsync(2) on a directory: makes its entries (created, renamed, removed) durable. */
export async function fsyncDirectory(dir: string): Promise<void> {
  // O_DIRECTORY: fail instead of syncing a file that replaced the directory.
  const handle = await fsp.open(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

// ---------------------------------------------------------------------------------------------
// private
// ---------------------------------------------------------------------------------------------

function _deferred(): NonNullable<DirState["next"]> {
  let resolve!: () => void;
  let reject!: (err: unknown) => void;
  const promise = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}
