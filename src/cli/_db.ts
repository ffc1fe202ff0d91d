// Opens the state file named by --db / MADMAIL_DB for the length of one command.
import { openDb, resolveDbPath, type OpenedDb } from "../db/open.ts";

/** `create`: only `init` makes a missing state file; every other command refuses to run without one. */
export async function withDb<T>(args: { db?: string }, fn: (state: OpenedDb) => Promise<T>, opts: { create?: boolean } = {}): Promise<T> {
  const state = await openDb(resolveDbPath(args.db), { create: opts.create ?? false });
  try {
    return await fn(state);
  } finally {
    await state.close();
  }
}
