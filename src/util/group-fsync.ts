// Group commit for fsyncs: of a Maildir directory, and of the state file's WAL.
//
// A Maildir delivery is durable once the file's data is fsynced AND the directory entry that
// the rename created in new/ is fsynced (POSIX makes no promise about a directory entry until
// the directory itself is fsynced). A queued message is durable once its COMMIT's frames in
// the WAL are fsynced. Either fsync is the same work for everyone who wrote before it started,
// so concurrent callers share it.
//
// The one rule that makes sharing safe: an fsync covers a write only if the write had
// completed before the fsync started. Therefore, per path:
//   - no fsync running: the caller's write is already done, so start one now and wait for it;
//   - an fsync running: it may have started before the caller's write, so the caller must not
//     join it. It joins the NEXT fsync instead, which starts only when the running one ends,
//     i.e. after every write of every caller who joined it.
// So a caller waits at most for the end of one fsync plus one full fsync, and at any moment
// each path has at most one fsync running and one batch waiting for the next.
import { constants, promises as fsp } from "node:fs";
import type { FileHandle } from "node:fs/promises";

/** Resolves once an fsync of the path that started after this call has completed. */
export type GroupFsync = (path: string) => Promise<void>;

interface PathState {
  /** The fsync now running, if any. */
  running: Promise<void> | null;
  /** Callers waiting for the fsync after `running`; created by the first of them. */
  next: { promise: Promise<void>; resolve: () => void; reject: (err: unknown) => void } | null;
}

/**
 * Returns `sync(path)`: call it after your write (a rename or unlink in a directory, a
 * COMMIT into a WAL) has completed; it resolves when an fsync of `path` that began after the
 * call has succeeded, and rejects if that fsync failed.
 */
export function createGroupFsync(fsyncPath: (path: string) => Promise<void> = fsyncDirectory): GroupFsync {
  const paths = new Map<string, PathState>();

  function start(path: string, state: PathState): Promise<void> {
    const run = fsyncPath(path).finally(() => {
      // Runs before anyone awaiting `run` resumes. Everyone in `next` wrote before now.
      state.running = null;
      const waiting = state.next;
      state.next = null;
      if (waiting) start(path, state).then(waiting.resolve, waiting.reject);
      else paths.delete(path); // idle: forget the path, the map stays small
    });
    state.running = run;
    return run;
  }

  return function sync(path: string): Promise<void> {
    let state = paths.get(path);
    if (!state) {
      state = { running: null, next: null };
      paths.set(path, state);
    }
    if (!state.running) return start(path, state);
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

export interface KeptOpenFile {
  /** fdatasync(2) on the thread pool: the event loop goes on meanwhile. */
  sync(): Promise<void>;
  close(): Promise<void>;
}

/**
 * fdatasync(2) of one file through a descriptor kept open: one call on the thread pool per
 * sync instead of three (open, fdatasync, close: measured in statefile.bench.ts). For the WAL of
 * the state file: SQLite writes it through a descriptor it keeps while the database is open, so
 * the file opened here on the first sync is the one its later commits go to. A failed sync
 * drops the descriptor; the next opens the path again.
 */
export function keptOpenFile(path: string): KeptOpenFile {
  let handle: Promise<FileHandle> | null = null;
  return {
    async sync() {
      const h = (handle ??= fsp.open(path, constants.O_RDONLY));
      try {
        await (await h).datasync();
      } catch (err) {
        if (handle === h) {
          handle = null;
          h.then((f) => f.close(), _ignore).catch(_ignore);
        }
        throw err;
      }
    },
    async close() {
      const h = handle;
      handle = null;
      if (h) await h.then((f) => f.close(), _ignore).catch(_ignore);
    },
  };
}

// ---------------------------------------------------------------------------------------------
// private
// ---------------------------------------------------------------------------------------------

function _deferred(): NonNullable<PathState["next"]> {
  let resolve!: () => void;
  let reject!: (err: unknown) => void;
  const promise = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

function _ignore(): void {}
