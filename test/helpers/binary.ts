// Runs the compiled binary (dist/madmail) the way a sysadmin would: copied to a temporary
// directory with no node_modules beside it, against a fresh state file.
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, renameSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

export const SOURCE_BINARY = resolve(import.meta.dir, "../../dist/madmail");

export interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

export interface Sandbox {
  dir: string;
  bin: string;
  db: string;
  /** Runs the binary with --db pointing at this sandbox's state file (via MADMAIL_DB). */
  run(args: string[], opts?: { stdin?: string | Uint8Array; env?: Record<string, string> }): Promise<Run>;
  cleanup(): void;
}

let sharedCopy: string | undefined;

/**
 * One copy of the binary per build, outside the repository, shared by every test process
 * (bun test never emits "exit", so a per-process copy could not be cleaned up). Copies of
 * older builds are removed.
 */
export function binaryCopy(): string {
  if (sharedCopy) return sharedCopy;
  const st = statSync(SOURCE_BINARY);
  const key = `madmail-bin-${st.size}-${Math.floor(st.mtimeMs)}`;
  const dir = join(tmpdir(), key);
  const bin = join(dir, "madmail");
  for (const old of readdirSync(tmpdir())) {
    if (old.startsWith("madmail-bin-") && old !== key) rmSync(join(tmpdir(), old), { recursive: true, force: true });
  }
  if (!existsSync(bin)) {
    mkdirSync(dir, { recursive: true });
    // Copy then rename: a parallel test process never runs a half-written file.
    const tmp = `${bin}.${process.pid}.tmp`;
    copyFileSync(SOURCE_BINARY, tmp);
    chmodSync(tmp, 0o755);
    renameSync(tmp, bin);
  }
  sharedCopy = bin;
  return bin;
}

export function sandbox(): Sandbox {
  const dir = mkdtempSync(join(tmpdir(), "madmail-test-"));
  const bin = binaryCopy();
  const db = join(dir, "data", "madmail.db");
  return {
    dir,
    bin,
    db,
    async run(args, opts = {}) {
      const proc = Bun.spawn([bin, ...args], {
        cwd: dir,
        env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: dir, NO_COLOR: "1", MADMAIL_DB: db, ...opts.env },
        stdin: opts.stdin === undefined ? "ignore" : new Blob([opts.stdin as BlobPart]),
        stdout: "pipe",
        stderr: "pipe",
      });
      const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
      return { code, stdout, stderr };
    },
    cleanup() {
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A textual dump of the state file (schema + rows), to prove a refused command changed nothing. */
export function dumpDb(dbPath: string): string {
  const { Database } = require("bun:sqlite") as typeof import("bun:sqlite");
  const db = new Database(dbPath, { readonly: true });
  try {
    const tables = db.query("SELECT name, sql FROM sqlite_master WHERE type = 'table' ORDER BY name").all() as { name: string; sql: string }[];
    const parts = [`user_version=${(db.query("PRAGMA user_version").get() as { user_version: number }).user_version}`];
    for (const t of tables) {
      parts.push(t.sql);
      for (const row of db.query(`SELECT * FROM "${t.name}" ORDER BY 1`).all()) parts.push(JSON.stringify(row));
    }
    return parts.join("\n");
  } finally {
    db.close();
  }
}
