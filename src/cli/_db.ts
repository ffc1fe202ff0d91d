// Opens the state file named by --db / MADMAIL_DB for the length of one command.
import { openDb, resolveDbPath, type OpenedDb } from "../db/open.ts";

export async function withDb<T>(args: { db?: string }, fn: (state: OpenedDb) => Promise<T>): Promise<T> {
  const state = await openDb(resolveDbPath(args.db));
  try {
    return await fn(state);
  } finally {
    await state.close();
  }
}
