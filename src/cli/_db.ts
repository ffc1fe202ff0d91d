// Opens the state file named by --db / MADMAIL_DB for the length of one command.
import { openDb, resolveDbPath, type OpenedDb } from "../db/open.ts";

/**
 * `create: false` for commands that cannot do anything on a new file: on a missing state file (a
 * mistyped --db) they exit 1 instead of answering "nothing here" from a new empty file they
 * would leave behind. Only commands that add something (init, domain add, config set, ...) make it.
 */
export async function withDb<T>(args: { db?: string }, fn: (state: OpenedDb) => Promise<T>, opts: { create?: boolean } = {}): Promise<T> {
  const state = await openDb(resolveDbPath(args.db), { create: opts.create ?? true });
  try {
    return await fn(state);
  } finally {
    await state.close();
  }
}

/**
 * withDb for commands that read, or change what must already be there (remove, set a password,
 * queue actions, send): a missing state file is an error, not a new empty one left behind.
 */
export function existingDb<T>(args: { db?: string }, fn: (state: OpenedDb) => Promise<T>): Promise<T> {
  return withDb(args, fn, { create: false });
}
