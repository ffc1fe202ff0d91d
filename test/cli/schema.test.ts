// Migrations on open, and refusal of a state file written by a newer schema.
import { Database } from "bun:sqlite";
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { migrations } from "../../src/db/migrations/index.ts";
import { dumpDb, sandbox, type Sandbox } from "../helpers/binary.ts";

const SCHEMA_VERSION = migrations.length;
const NEWER = SCHEMA_VERSION + 41;

let sb: Sandbox;
beforeEach(() => {
  sb = sandbox();
});
afterEach(() => sb.cleanup());

const pragma = (path: string, sql: string) => {
  const db = new Database(path);
  try {
    db.exec(sql);
  } finally {
    db.close();
  }
};
const refusal = (path: string) =>
  `madmail: ${path} was written by a newer madmail (schema version ${NEWER}; this binary knows up to ${SCHEMA_VERSION}). ` +
  "Upgrade madmail; the file was not touched.\n";

/** Every command that opens the state file; each must refuse and leave it as it was. */
const OPENERS = [
  "init --domain x.example", "admin-token", "config list", "config get listen.http", "config set listen.http off", "config unset listen.http",
  "domain list", "domain add b.example", "domain remove a.example", "endpoint-cache list", "endpoint-cache get a.com",
  "endpoint-cache set c.com d.com", "endpoint-cache remove a.com", "exchanger list", "exchanger add r2 https://r2.example",
  "exchanger set relay1 --mode pull", "exchanger disable relay1", "exchanger token relay1", "exchanger remove relay1",
  "serve --http 127.0.0.1:1",
];

describe("migrations", () => {
  test("a new file gets every migration and the current user_version", async () => {
    expect((await sb.run(["init", "--quiet"])).code).toBe(0);
    const dump = dumpDb(sb.db);
    expect(dump.split("\n")[0]).toBe(`user_version=${SCHEMA_VERSION}`);
    for (const table of ["settings", "meta", "domains", "users", "dns_overrides", "exchangers", "federation_rules"]) {
      expect(dump).toContain(`CREATE TABLE "${table}"`);
    }
  });

  test("an empty SQLite file (user_version 0, no tables) is migrated in place; one with another program's tables is refused", async () => {
    mkdirSync(dirname(sb.db), { recursive: true });
    pragma(sb.db, "PRAGMA application_id = 7");
    expect((await sb.run(["domain", "add", "a.example"])).code).toBe(0);
    const dump = dumpDb(sb.db);
    expect(dump).toStartWith(`user_version=${SCHEMA_VERSION}\n`);
    expect(dump).toContain('"name":"a.example"');

    const other = join(dirname(sb.db), "other.db");
    pragma(other, "CREATE TABLE unrelated(x); INSERT INTO unrelated VALUES (1)");
    const r = await sb.run(["domain", "add", "a.example", "--db", other]);
    expect(r).toMatchObject({ code: 1, stderr: expect.stringContaining("is not a madmail state file (an SQLite database of another program") });
    expect(dumpDb(other)).toStartWith("user_version=0\n");
    expect(dumpDb(other)).not.toContain("domains");
  });
});

describe("a file from a newer schema is refused and not touched", () => {
  beforeEach(async () => {
    for (const args of [["init", "--domain", "a.example"], ["exchanger", "add", "relay1", "https://relay1.example"], ["endpoint-cache", "set", "a.com", "b.com"]]) {
      expect((await sb.run(args)).code).toBe(0);
    }
    // bun:sqlite checkpoints and removes the WAL on close, so all state is in the main file.
    pragma(sb.db, `PRAGMA user_version = ${NEWER}`);
    expect(existsSync(`${sb.db}-wal`)).toBe(false);
  });

  test.each(OPENERS)("madmail %s", async (line) => {
    const before = { bytes: readFileSync(sb.db), dump: dumpDb(sb.db) };
    const r = await sb.run(line.split(" "));
    expect(r).toEqual({ code: 1, stdout: "", stderr: refusal(sb.db) });
    expect(Buffer.compare(readFileSync(sb.db), before.bytes)).toBe(0);
    expect(dumpDb(sb.db)).toBe(before.dump);
  });
});

// BUG (src/db/open.ts, not fixed here): openDb sets `PRAGMA journal_mode = WAL` before it reads
// user_version, so a newer file in rollback-journal mode has its header rewritten (bytes 18-19
// and the change counter) before the refusal that says "the file was not touched". Fix: read
// user_version (after busy_timeout) and refuse before switching the journal mode. Remove
// `.failing` then.
test("a newer file in rollback-journal mode keeps its exact bytes", async () => {
  mkdirSync(dirname(sb.db), { recursive: true });
  pragma(sb.db, `PRAGMA journal_mode = DELETE; CREATE TABLE t(x); PRAGMA user_version = ${NEWER}`);
  const before = readFileSync(sb.db);
  const r = await sb.run(["domain", "list"]);
  expect(r).toEqual({ code: 1, stdout: "", stderr: refusal(sb.db) });
  expect(Buffer.compare(readFileSync(sb.db), before)).toBe(0);
});
