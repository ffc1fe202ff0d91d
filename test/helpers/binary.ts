// Runs the compiled binary (dist/madmail) the way a sysadmin would: copied to a temporary
// directory with no node_modules beside it, against a fresh state file.
import { copyFileSync, mkdtempSync, rmSync } from "node:fs";
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

let sharedCopy: { dir: string; bin: string } | undefined;

/** One copy of the binary per test process, outside the repository. */
export function binaryCopy(): string {
  if (!sharedCopy) {
    const dir = mkdtempSync(join(tmpdir(), "madmail-bin-"));
    const bin = join(dir, "madmail");
    copyFileSync(SOURCE_BINARY, bin);
    Bun.spawnSync(["chmod", "+x", bin]);
    sharedCopy = { dir, bin };
    process.once("exit", () => rmSync(dir, { recursive: true, force: true }));
  }
  return sharedCopy.bin;
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
