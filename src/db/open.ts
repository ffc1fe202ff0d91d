// Opens the one state file: libsql (SQLite format) + Kysely. Runs migrations on open,
// refuses files written by a newer schema. The database client is opened only here.
import { closeSync, existsSync, mkdirSync, openSync, statSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import Libsql from "libsql";
import { createGroupFsync, keptOpenFile } from "../util/group-fsync.ts";
import { Kysely, SqliteDialect, sql } from "kysely";
import { MadmailError, usageError } from "../errors.ts";
import { migrations } from "./migrations/index.ts";
import type { Database } from "./schema.ts";

export type Db = Kysely<Database>;

export interface OpenedDb {
  db: Db;
  path: string;
  /** Directory holding the state file; default home of Maildirs and keys. */
  dataDir: string;
  /** PRAGMA data_version: changes when another connection (a CLI command) has committed. */
  dataVersion(): number;
  /**
   * Makes every transaction committed so far durable: fdatasync of the WAL on the thread pool,
   * shared by concurrent callers. For commits made with synchronous=NORMAL (WriteBatcher).
   */
  syncWal(): Promise<void>;
  close(): Promise<void>;
}

export const SCHEMA_VERSION = migrations.length;
export const DEFAULT_DB_PATH = "madmail-data/madmail.db";
/** How long a writer waits for another process's lock before giving up. */
const BUSY_TIMEOUT_MS = 30_000;
/** WAL pages between automatic checkpoints (SQLite default 1000). */
const WAL_CHECKPOINT_PAGES = 10_000;

/**
 * --db flag, then MADMAIL_DB, then ./madmail-data/madmail.db. An empty --db is refused (a
 * script's unset variable must not fall back to a file in the working directory); an empty
 * MADMAIL_DB counts as unset.
 */
export function resolveDbPath(flag?: string): string {
  if (flag !== undefined && flag.trim() === "") throw usageError("--db needs a path (it was empty)");
  return resolve(flag || process.env.MADMAIL_DB || DEFAULT_DB_PATH);
}

/** Creates the state file's directory if needed; a clear error (not a stack) when it cannot. */
function ensureStateDir(path: string): void {
  try {
    // 0700: the state file holds secrets (smarthost password, exchanger tokens).
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    // EEXIST from a recursive mkdir: a file stands where a directory should be.
    const why = code === "EEXIST" || code === "ENOTDIR" ? "a file of that name is in the way" : (code ?? (err as Error).message);
    throw new MadmailError("config", `cannot create ${dirname(path)}, the directory of the state file ${path}: ${why}`, { cause: err });
  }
}

export interface OpenOptions {
  /**
   * Make the state file when it is missing (init, serve). Otherwise a missing file is an
   * error: a mistyped --db must not answer "no users" from a new empty file, nor leave one.
   * @default true
   */
  create?: boolean;
}

/** The error of a command that needs an existing state file. */
export function noStateFile(path: string): MadmailError {
  return new MadmailError("config", `no state file at ${path}: run \`madmail init --domain DOMAIN\` first, or point --db (or MADMAIL_DB) at the one in use`);
}

export async function openDb(path: string, opts: OpenOptions = {}): Promise<OpenedDb> {
  if (opts.create === false && !existsSync(path)) throw noStateFile(path);
  ensureStateDir(path);
  const st = statSync(path, { throwIfNoEntry: false });
  if (st?.isDirectory()) {
    throw new MadmailError("config", `${path} is a directory, not a state file; give the file's path (e.g. ${join(path, "madmail.db")})`);
  }
  let raw: InstanceType<typeof Libsql>;
  try {
    // A new state file is made 0600 (SQLite gives its -wal and -shm the same mode): it holds
    // secrets in clear. An existing one keeps the mode its owner chose.
    if (!st) closeSync(openSync(path, "a", 0o600));
    raw = new Libsql(path, { timeout: 30 });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    // libsql reports SQLITE_CANTOPEN as `ConnectionFailed("...: 14")`.
    const why = code === "EACCES" || /\b14"?\)?$/.test((err as Error).message)
      ? `permission denied (the file and its directory ${dirname(path)} must be readable and writable for this user)`
      : (err as Error).message;
    throw new MadmailError("config", `cannot open state file ${path}: ${why}`, { cause: err });
  }
  let version: number;
  let objects: number;
  try {
    // busy_timeout first: the WAL switch below needs the write lock another process may hold.
    raw.exec(`PRAGMA busy_timeout = ${BUSY_TIMEOUT_MS}`);
    // Refuse a newer file, or another program's, before anything (even the journal mode switch)
    // writes to it. One statement, so that a schema another process is creating right now is
    // seen whole or not at all.
    const row = raw.prepare("SELECT user_version AS v, (SELECT count(*) FROM sqlite_master) AS n FROM pragma_user_version").get() as { v: number; n: number };
    version = Number(row.v);
    objects = Number(row.n);
  } catch (err) {
    raw.close();
    // The first read of the header: a file that is not SQLite at all is refused untouched.
    if ((err as { code?: string }).code === "SQLITE_NOTADB") {
      throw new MadmailError("config", `${path} is not a madmail state file (not an SQLite database); it was not changed`, { cause: err });
    }
    const why = (err as { code?: string }).code === "SQLITE_READONLY"
      ? `it or its directory ${dirname(path)} is read-only for this user (SQLite needs to write ${path}-wal and -shm beside it, also to read)`
      : (err as Error).message;
    throw new MadmailError("config", `cannot read state file ${path}: ${why}`, { cause: err });
  }
  if (version > SCHEMA_VERSION) {
    raw.close();
    throw newerSchema(path, version);
  }
  // madmail sets user_version in the transaction that makes its tables: tables without it are
  // another program's database (a mistyped --db), which must not get ours added.
  if (version === 0 && objects > 0) {
    raw.close();
    throw new MadmailError("config", `${path} is not a madmail state file (an SQLite database of another program: it has tables but no madmail schema); it was not changed`);
  }
  // An empty file (0 bytes, or SQLite's header alone) is a state file nobody has made yet.
  if (version === 0 && opts.create === false) {
    raw.close();
    throw new MadmailError("config", `${path} is empty, not yet a madmail state file: run \`madmail init --domain DOMAIN\` first, or point --db (or MADMAIL_DB) at the one in use`);
  }
  await switchToWal(raw, path);
  // FULL: a commit is on disk when it returns; we acknowledge mail only after commits.
  raw.exec("PRAGMA synchronous = FULL");
  raw.exec("PRAGMA foreign_keys = ON");
  // A checkpoint copies the newest version of every page in the WAL into the file, on the
  // connection whose COMMIT crossed the limit (the event loop, in serve). Under load the same
  // index and table tail pages change in every commit: at SQLite's default (1,000 pages, 4 MB)
  // they were copied every few hundred commits, and COMMIT averaged 250 µs on a relaying
  // serve; with 10,000 (40 MB of WAL at most between checkpoints) 157 µs.
  raw.exec(`PRAGMA wal_autocheckpoint = ${WAL_CHECKPOINT_PAGES}`);
  const db = new Kysely<Database>({ dialect: new SqliteDialect({ database: withStatementCache(raw) as never }) });
  try {
    await migrate(db, path);
  } catch (err) {
    await db.destroy();
    throw err;
  }
  const dataVersionStmt = raw.prepare("PRAGMA data_version");
  // Asked several times per message (every snapshot read): one look per event-loop turn is
  // enough: a commit by another process is seen at most one turn later.
  let seen: number | null = null;
  const dataVersion = () => {
    if (seen === null) {
      seen = pragmaNumber(dataVersionStmt);
      setImmediate(() => (seen = null));
    }
    return seen;
  };
  // In WAL mode a COMMIT only appends to the -wal file; NORMAL syncs it (and the database file)
  // around checkpoints, so syncing the WAL after a commit makes that commit as durable as FULL.
  const walPath = `${path}-wal`;
  const wal = keptOpenFile(walPath);
  const groupFsync = createGroupFsync(() => wal.sync());
  const close = async () => {
    // Copy the WAL into the file, so that with no madmail running the file alone is the whole
    // state (a plain `cp` of it is a backup). PASSIVE: it never waits for, nor resets the WAL
    // under, a server using the file (which checkpoints on its own).
    try {
      raw.prepare("PRAGMA wal_checkpoint(PASSIVE)").all();
    } catch {
      // a read-only file, or the WAL in use: nothing lost, the data stays in the WAL
    }
    await wal.close();
    await db.destroy();
  };
  return { db, path, dataDir: dirname(path), dataVersion, syncWal: () => groupFsync(walPath), close };
}

/**
 * Switching a file to WAL takes an exclusive lock, and SQLite answers SQLITE_BUSY at once,
 * without its busy handler, when another process holds the file meanwhile: this happens when
 * several commands open a fresh file together. Retried here up to the busy timeout.
 */
async function switchToWal(raw: InstanceType<typeof Libsql>, path: string): Promise<void> {
  const deadline = Date.now() + BUSY_TIMEOUT_MS;
  for (let pause = 2; ; pause = Math.min(pause * 2, 100)) {
    try {
      raw.exec("PRAGMA journal_mode = WAL");
      return;
    } catch (err) {
      if ((err as { code?: string }).code !== "SQLITE_BUSY") throw err;
      if (Date.now() >= deadline) {
        raw.close();
        throw new MadmailError("temporary", `cannot switch ${path} to WAL mode: still locked by another process after ${BUSY_TIMEOUT_MS / 1000} s`, { cause: err });
      }
      await new Promise((r) => setTimeout(r, pause * (0.5 + Math.random())));
    }
  }
}

/**
 * Forward-only migrations keyed by PRAGMA user_version. Runs under BEGIN IMMEDIATE so that
 * many processes opening a fresh file at once apply each migration exactly once.
 */
async function migrate(db: Db, path: string): Promise<void> {
  const current = await userVersion(db);
  if (current > SCHEMA_VERSION) throw newerSchema(path, current);
  if (current === SCHEMA_VERSION) return;
  await withWriteTransaction(db, async (trx) => {
    const version = await userVersion(trx);
    if (version > SCHEMA_VERSION) throw newerSchema(path, version);
    for (let v = version; v < SCHEMA_VERSION; v++) {
      const m = migrations[v]!;
      try {
        await m.up(trx);
      } catch (err) {
        throw new MadmailError("schema", `migration ${m.name} failed on ${path}: ${(err as Error).message}`, { cause: err });
      }
    }
    await sql.raw(`PRAGMA user_version = ${SCHEMA_VERSION}`).execute(trx);
  });
}

/**
 * Kysely prepares every query anew; on the hot path (one message = a few queries) preparing
 * cost more than running. Statements are reused per SQL text: Kysely runs one query at a time
 * on its single connection, so a cached statement is never in use twice.
 */
function withStatementCache(raw: InstanceType<typeof Libsql>): { prepare(sql: string): unknown; close(): void } {
  const cache = new Map<string, ReturnType<typeof raw.prepare>>();
  return {
    prepare(sql: string) {
      let stmt = cache.get(sql);
      if (!stmt) {
        stmt = raw.prepare(sql);
        // Kysely asks `reader` before every run, a call into the addon (1-2% of a relaying
        // serve's main thread); it never changes for a prepared statement.
        Object.defineProperty(stmt, "reader", { value: stmt.reader });
        // Queries with IN lists of varying length make new texts; keep the cache bounded.
        if (cache.size >= 500) cache.delete(cache.keys().next().value!);
        cache.set(sql, stmt);
      }
      return stmt;
    },
    close: () => raw.close(),
  };
}

/** First column of a one-row PRAGMA (libsql's pluck() does not unwrap rows). */
function pragmaNumber(stmt: { get(): unknown }): number {
  const row = stmt.get() as Record<string, unknown> | undefined;
  return Number(row ? Object.values(row)[0] : 0);
}

async function userVersion(db: Kysely<any>): Promise<number> {
  const { rows } = await sql<{ user_version: number }>`PRAGMA user_version`.execute(db);
  return rows[0]?.user_version ?? 0;
}

function newerSchema(path: string, version: number): MadmailError {
  return new MadmailError(
    "schema",
    `${path} was written by a newer madmail (schema version ${version}; this binary knows up to ${SCHEMA_VERSION}). ` +
      "Upgrade madmail; the file was not touched.",
  );
}

export interface WriteOptions {
  /**
   * true (default): COMMIT returns only once the transaction is on disk (synchronous=FULL):
   * for anything that backs an acknowledgement, such as queued mail. (Through a WriteBatcher
   * with syncWal, as serve runs, the COMMIT uses NORMAL and the write is answered after an
   * fdatasync of the WAL instead: the same guarantee, without blocking the event loop.)
   * false: COMMIT does not wait for the disk (synchronous=NORMAL in WAL mode): it survives a
   * crash of the process but not a power loss. For bookkeeping whose loss only repeats work
   * (a delivery status, an attempt record, a delivery id): no fsync on the event loop.
   */
  durable?: boolean;
}

const syncMode = new WeakMap<object, "FULL" | "NORMAL">();

/**
 * Runs fn in BEGIN IMMEDIATE: the write lock is taken up front, so concurrent writers wait on
 * busy_timeout instead of failing with SQLITE_BUSY when a read transaction tries to upgrade.
 */
export async function withWriteTransaction<T>(db: Db | Kysely<any>, fn: (trx: Kysely<Database>) => Promise<T>, opts: WriteOptions = {}): Promise<T> {
  const mode = opts.durable === false ? "NORMAL" : "FULL";
  return db.connection().execute(async (conn) => {
    // One connection per Kysely: remember its setting and change it only when needed.
    if ((syncMode.get(db) ?? "FULL") !== mode) {
      await sql.raw(`PRAGMA synchronous = ${mode}`).execute(conn);
      syncMode.set(db, mode);
    }
    await sql`BEGIN IMMEDIATE`.execute(conn);
    try {
      const result = await fn(conn as Kysely<Database>);
      await sql`COMMIT`.execute(conn);
      return result;
    } catch (err) {
      await sql`ROLLBACK`.execute(conn).catch(() => {});
      throw err;
    }
  });
}
