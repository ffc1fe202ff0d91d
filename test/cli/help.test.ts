// --version, --help on every command (found by walking the help output, so commands added
// later are held to the same rule), usage errors, and where the state file is.
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import pkg from "../../package.json" with { type: "json" };
import { sandbox } from "../helpers/binary.ts";

const sb = sandbox();
afterAll(() => sb.cleanup());

/** Command names listed under COMMANDS in a help text (aliases after a comma are dropped). */
function listedCommands(help: string): string[] {
  const section = /\nCOMMANDS\n\n([\s\S]*?)\n\nUse /.exec(help)?.[1] ?? "";
  return section.split("\n").map((l) => l.trim().split(/[\s,]+/)[0]!).filter(Boolean);
}

/** Every command path reachable from the root, depth first: [[], ["serve"], ["config"], ["config", "list"], ...]. */
async function walk(path: string[] = []): Promise<string[][]> {
  const r = await sb.run([...path, "--help"]);
  const subs = listedCommands(r.stdout);
  const out: string[][] = [path];
  for (const s of subs) out.push(...(await walk([...path, s])));
  return out;
}

const FOUNDATION = [
  "serve", "init", "admin-token",
  "config list", "config get", "config set", "config unset",
  "domain list", "domain add", "domain remove",
  "endpoint-cache list", "endpoint-cache get", "endpoint-cache set", "endpoint-cache remove",
  "exchanger list", "exchanger add", "exchanger set", "exchanger enable", "exchanger disable", "exchanger remove", "exchanger token",
];

describe("version", () => {
  test.each([["--version"], ["-v"]])("madmail %s prints the package version only", async (flag) => {
    const r = await sb.run([flag]);
    expect(r).toEqual({ code: 0, stdout: `${pkg.version}\n`, stderr: "" });
  });

  test.each([[["--version", "--json"]], [["--json", "-v"]]])("madmail %p prints it as JSON", async (args) => {
    const r = await sb.run(args);
    expect(r).toEqual({ code: 0, stdout: JSON.stringify({ version: pkg.version }) + "\n", stderr: "" });
  });
});

describe("help", () => {
  test("every command and subcommand has --help with usage and examples", async () => {
    const paths = await walk();
    const names = paths.map((p) => p.join(" "));
    for (const f of FOUNDATION) expect(names).toContain(f);
    for (const path of paths) {
      const r = await sb.run([...path, "--help"]);
      const name = ["madmail", ...path].join(" ");
      expect({ name, code: r.code, stderr: r.stderr }).toEqual({ name, code: 0, stderr: "" });
      expect(r.stdout).toContain(`USAGE ${name}`);
      // citty pads columns to the widest row: no line may end in blanks (they wrap in a narrow terminal).
      expect({ name, padded: r.stdout.split("\n").filter((l) => / $/.test(l)) }).toEqual({ name, padded: [] });
      // A parent lists its commands one line each: a description that long belongs in the command's DETAILS.
      const section = /\nCOMMANDS\n\n([\s\S]*?)\n\nUse /.exec(r.stdout)?.[1] ?? "";
      expect({ name, long: section.split("\n").filter((l) => l.length > 110) }).toEqual({ name, long: [] });
      const examples = /\nEXAMPLES\n\n([\s\S]*)$/.exec(r.stdout)?.[1]?.trim().split("\n").map((l) => l.trim()) ?? [];
      expect({ name, examples: examples.length > 0 }).toEqual({ name, examples: true });
      // A leaf's examples run that very command.
      if (path.length && !listedCommands(r.stdout).length) {
        expect({ name, runsItself: examples.some((e) => e.includes(`madmail ${path.join(" ")}`) || e.includes(` ${path.join(" ")} `)) })
          .toEqual({ name, runsItself: true });
      }
    }
  });

  test("bare madmail and -h print the root help", async () => {
    const bare = await sb.run([]);
    expect(bare.code).toBe(0);
    expect(bare.stdout).toContain("USAGE madmail ");
    // The flags every command takes, and what the exit statuses mean.
    expect(bare.stdout).toContain("Every command takes --db PATH");
    expect(bare.stdout).toContain("75 temporary failure");
    expect((await sb.run(["-h"])).stdout).toBe(bare.stdout);
  });

  test("--help works after arguments and does not touch the state file", async () => {
    const r = await sb.run(["endpoint-cache", "set", "a.com", "b.com", "--help"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("USAGE madmail endpoint-cache set [OPTIONS] <KEY> <TARGET>");
    expect(existsSync(sb.db)).toBe(false);
  });

  test("dns-cache is an alias of endpoint-cache", async () => {
    const a = await sb.run(["dns-cache", "set", "--help"]);
    const b = await sb.run(["endpoint-cache", "set", "--help"]);
    expect(a.code).toBe(0);
    expect(a.stdout).toBe(b.stdout);
  });

  test("pull-client --help explains its summary and exit statuses under DETAILS, before the examples", async () => {
    const r = await sb.run(["pull-client", "--help"]);
    const details = /\nDETAILS\n\n([\s\S]*?)\n\nEXAMPLES\n/.exec(r.stdout)?.[1] ?? "";
    expect(details).toContain("deferred (not acknowledged");
    expect(details).toMatch(/75 on a temporary\s+failure/);
    expect(details.split("\n").every((l) => l.length <= 96)).toBe(true);
  });

  test("exchanger set documents --no-fallback", async () => {
    expect((await sb.run(["exchanger", "set", "--help"])).stdout).toContain("--no-fallback");
  });
});

describe("usage errors exit 2 with a hint and change nothing", () => {
  test.each([
    [["bogus"], 'madmail: unknown command "bogus"\nRun `madmail --help` for usage.\n'],
    [["domain", "bogus"], 'madmail: unknown command "bogus"\nRun `madmail domain --help` for usage.\n'],
    [["domain", "list", "--bogus"], 'madmail: unknown option "--bogus"\nRun `madmail domain list --help` for usage.\n'],
    [["domain", "add"], "madmail: Missing required positional argument: DOMAIN\nRun `madmail domain add --help` for usage.\n"],
    [["domain", "add", "a.com", "b.com"], "madmail: too many arguments\nRun `madmail domain add --help` for usage.\n"],
    [["config"], "madmail: missing command\nRun `madmail config --help` for usage.\n"],
    [["endpoint-cache", "set", "a.com", "b.com", "--comment"], "madmail: option --comment needs a value\nRun `madmail endpoint-cache set --help` for usage.\n"],
    [["exchanger", "add", "x", "https://x.example", "--mode", "both"],
      "madmail: Invalid value for argument: --mode (both). Expected one of: push, pull.\nRun `madmail exchanger add --help` for usage.\n"],
  ])("madmail %p", async (args, stderr) => {
    const r = await sb.run(args);
    expect(r).toEqual({ code: 2, stdout: "", stderr });
    expect(existsSync(sb.db)).toBe(false);
  });
});

describe("state file location", () => {
  const listDomains = async (args: string[], env: Record<string, string>) => {
    const r = await sb.run([...args], { env });
    expect(r.stderr).toBe("");
    return r;
  };

  test("default is ./madmail-data/madmail.db in the working directory", async () => {
    const s = sandbox();
    try {
      expect((await s.run(["domain", "add", "a.example"], { env: { MADMAIL_DB: "" } })).code).toBe(0);
      expect(existsSync(join(s.dir, "madmail-data", "madmail.db"))).toBe(true);
      expect(existsSync(s.db)).toBe(false);
    } finally {
      s.cleanup();
    }
  });

  test("MADMAIL_DB is used, --db wins over it, and --db may stand before the command", async () => {
    const env = join(sb.dir, "env.db");
    const flag = join(sb.dir, "flag.db");
    await listDomains(["domain", "add", "env.example"], { MADMAIL_DB: env });
    await listDomains(["domain", "add", "flag.example", "--db", flag], { MADMAIL_DB: env });
    await listDomains(["--db", flag, "domain", "add", "flag2.example"], { MADMAIL_DB: env });
    const names = async (db: string) => JSON.parse((await listDomains(["domain", "list", "--json", `--db=${db}`], {})).stdout).map((d: { name: string }) => d.name);
    expect(await names(env)).toEqual(["env.example"]);
    expect(await names(flag)).toEqual(["flag.example", "flag2.example"]);
  });

  test.each(["domain add a.example", "serve --http 127.0.0.1:1"])("madmail %s with a state file whose directory cannot be made: exit 1, a sentence, no stack", async (cmd) => {
    const args = cmd.split(" ");
    const file = join(sb.dir, "a-file");
    writeFileSync(file, "");
    for (const [db, why] of [[join(file, "x.db"), "a file of that name is in the way"], ["/proc/madmail-nope/x.db", "ENOENT"]] as const) {
      const dir = db.slice(0, db.lastIndexOf("/"));
      expect(await sb.run([...args, "--db", db])).toEqual({
        code: 1, stdout: "", stderr: `madmail: cannot create ${dir}, the directory of the state file ${db}: ${why}\n`,
      });
    }
  });

  test.each(["queue list", "serve --http 127.0.0.1:1"])("madmail %s on a file that is not a state file, or a directory: exit 1, a sentence, nothing written", async (cmd) => {
    const args = cmd.split(" ");
    const junk = join(sb.dir, "notes.txt");
    const bytes = Buffer.from("not a database, just some notes\n".repeat(10));
    writeFileSync(junk, bytes);
    expect(await sb.run([...args, "--db", junk])).toEqual({
      code: 1, stdout: "", stderr: `madmail: ${junk} is not a madmail state file (not an SQLite database); it was not changed\n`,
    });
    expect(readFileSync(junk).equals(bytes)).toBe(true);
    expect(readdirSync(sb.dir).filter((f) => f.startsWith("notes.txt"))).toEqual(["notes.txt"]);
    expect(await sb.run([...args, "--db", sb.dir])).toEqual({
      code: 1, stdout: "", stderr: `madmail: ${sb.dir} is a directory, not a state file; give the file's path (e.g. ${join(sb.dir, "madmail.db")})\n`,
    });
  });

  // Every command that reads or writes state takes --db (and so MADMAIL_DB, the same code path);
  // those that change something make a missing file, those that only read refuse it.
  test.each([
    "init", "admin-token --rotate", "config set listen.http off",
    "domain add a.example", "dns-cache set a.com b.com", "exchanger add x https://x.example",
  ])("madmail %s --db PATH creates and uses PATH", async (line) => {
    const args = line.split(" ");
    const path = join(sb.dir, `db-${args.join("-").replace(/[^a-z0-9]+/gi, "_")}`, "state.db");
    const r = await sb.run([...args, "--db", path], { env: { MADMAIL_DB: join(sb.dir, "unused", "x.db") } });
    expect(r.code).toBe(0);
    expect(existsSync(path)).toBe(true);
    expect(existsSync(join(sb.dir, "unused"))).toBe(false);
  });

  test.each(["config list", "config get listen.http", "domain list", "endpoint-cache list", "exchanger list"])("madmail %s --db PATH on a missing file: exit 1, nothing made", async (line) => {
    const path = join(sb.dir, "missing", "state.db");
    const r = await sb.run([...line.split(" "), "--db", path]);
    expect(r).toMatchObject({ code: 1, stdout: "" });
    expect(r.stderr).toStartWith(`madmail: no state file at ${path}: `);
    expect(existsSync(join(sb.dir, "missing"))).toBe(false);
  });

  test("the state file is in WAL mode", async () => {
    const path = join(sb.dir, "wal.db");
    expect((await sb.run(["domain", "add", "a.example", "--db", path])).code).toBe(0);
    const { Database } = await import("bun:sqlite");
    const db = new Database(path, { readonly: true });
    expect(db.query("PRAGMA journal_mode").get()).toEqual({ journal_mode: "wal" });
    db.close();
  });
});
