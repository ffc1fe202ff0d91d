// madmail init, madmail domain list|add|remove, madmail admin-token.
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { dumpDb, sandbox, type Sandbox } from "../helpers/binary.ts";

let sb: Sandbox;
beforeEach(() => {
  sb = sandbox();
});
afterEach(() => sb.cleanup());

const TOKEN_LINE = /^Admin token \(shown once, only its hash is stored\): (mma_[A-Za-z0-9_-]{43})$/m;
const sha256 = (s: string) => createHash("sha256").update(s).digest("hex");
const ok = async (args: string[]) => {
  const r = await sb.run(args);
  expect({ args, code: r.code, stderr: r.stderr }).toEqual({ args, code: 0, stderr: "" });
  return r.stdout;
};
const meta = async () => {
  const { Database } = await import("bun:sqlite");
  const db = new Database(sb.db, { readonly: true });
  try {
    return Object.fromEntries((db.query("SELECT key, value FROM meta").all() as { key: string; value: string }[]).map((r) => [r.key, r.value]));
  } finally {
    db.close();
  }
};
const domains = async () => JSON.parse(await ok(["domain", "list", "--json"])).map((d: { name: string }) => d.name);
/** True when the text occurs in no file of the data directory (state file, WAL, shm). */
const nowhereOnDisk = (text: string) =>
  readdirSync(dirname(sb.db)).every((f) => !readFileSync(join(dirname(sb.db), f)).includes(text));

describe("init", () => {
  test("creates the file, adds the domain, prints the token once; only its hash is stored", async () => {
    const out = await ok(["init", "--domain", "Chat.Example.ORG."]);
    const token = TOKEN_LINE.exec(out)?.[1];
    expect(token).toBeDefined();
    expect(out).toBe(`State file: ${sb.db}\nDomain added: chat.example.org\nAdmin token (shown once, only its hash is stored): ${token}\n`);
    expect(existsSync(sb.db)).toBe(true);
    expect(await domains()).toEqual(["chat.example.org"]);
    expect((await meta()).admin_token_hash).toBe(sha256(token!));
    expect(nowhereOnDisk(token!)).toBe(true);
  });

  test("running it again destroys nothing: same domain, same token hash, no token printed", async () => {
    const first = await ok(["init", "--domain", "chat.example.org"]);
    await ok(["exchanger", "add", "relay1", "https://relay1.example"]);
    await ok(["config", "set", "listen.http", "0.0.0.0:80"]);
    const hash = (await meta()).admin_token_hash;
    const before = dumpDb(sb.db);
    const second = await ok(["init", "--domain", "chat.example.org"]);
    expect(second).toBe(
      `State file: ${sb.db}\nDomain already present: chat.example.org\n` +
        "Admin token already set; nothing replaced (rotate with `madmail admin-token --rotate`).\n",
    );
    expect(second).not.toMatch(TOKEN_LINE);
    expect(dumpDb(sb.db)).toBe(before);
    expect((await meta()).admin_token_hash).toBe(hash);
    expect(first).toMatch(TOKEN_LINE);
    // A third run with another domain only adds it.
    await ok(["init", "--domain", "second.example"]);
    expect(await domains()).toEqual(["chat.example.org", "second.example"]);
    expect((await meta()).admin_token_hash).toBe(hash);
  });

  test("without --domain: token only; --quiet still prints the token", async () => {
    const out = await ok(["init", "--quiet"]);
    expect(out).toMatch(/^Admin token \(shown once, only its hash is stored\): mma_\S+\n$/);
    expect(await domains()).toEqual([]);
    expect(await ok(["init", "--quiet"])).toBe("");
  });

  test.each(["bad_domain", "-x.org", "a..b", "1.2.3", ""])("a bad --domain %p exits 2 and creates no file", async (d) => {
    const r = await sb.run(["init", `--domain=${d}`]);
    expect(r).toEqual({ code: 2, stdout: "", stderr: `madmail: invalid domain "${d}": expected a name like chat.example.org or an IP literal\n` });
    expect(existsSync(sb.db)).toBe(false);
  });
});

describe("domain", () => {
  test("add, list, remove", async () => {
    await ok(["init", "--quiet"]);
    expect(await ok(["domain", "list"])).toBe("No local domains. Add one with `madmail domain add DOMAIN`.\n");
    expect(await ok(["domain", "list", "--json"])).toBe("[]\n");
    expect(await ok(["domain", "add", "B.example."])).toBe("Domain added: b.example\n");
    expect(await ok(["domain", "add", "a.example"])).toBe("Domain added: a.example\n");
    expect(await ok(["domain", "add", "[10.0.0.1]"])).toBe("Domain added: 10.0.0.1\n");
    expect(await ok(["domain", "add", "bücher.example"])).toBe("Domain added: xn--bcher-kva.example\n");
    expect(await ok(["domain", "add", "b.example"])).toBe("Domain already present: b.example\n");
    const table = (await ok(["domain", "list"])).replace(/\d{4}-\d\d-\d\d \d\d:\d\d:\d\d/g, "YYYY-MM-DD hh:mm:ss");
    expect(table).toBe([
      "DOMAIN                 ADDED AT",
      "10.0.0.1               YYYY-MM-DD hh:mm:ss",
      "a.example              YYYY-MM-DD hh:mm:ss",
      "b.example              YYYY-MM-DD hh:mm:ss",
      "xn--bcher-kva.example  YYYY-MM-DD hh:mm:ss",
      "",
    ].join("\n"));
    const json = JSON.parse(await ok(["domain", "list", "--json"]));
    expect(Object.keys(json[0])).toEqual(["name", "created_at"]);
    expect(json[0].created_at).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    expect(await ok(["domain", "remove", "A.EXAMPLE"])).toBe("Domain removed: a.example\n");
    expect(await domains()).toEqual(["10.0.0.1", "b.example", "xn--bcher-kva.example"]);
  });

  test.each([
    [["domain", "remove", "nope.example"], 1, 'no local domain "nope.example"'],
    [["domain", "add", "bad_domain"], 2, 'invalid domain "bad_domain": expected a name like chat.example.org or an IP literal'],
    [["domain", "remove", "bad_domain"], 2, 'invalid domain "bad_domain": expected a name like chat.example.org or an IP literal'],
    [["domain", "add", "--", "-a.example"], 2, 'invalid domain "-a.example": expected a name like chat.example.org or an IP literal'],
  ])("%p is refused and writes nothing", async (args, code, message) => {
    await ok(["domain", "add", "keep.example"]);
    const before = dumpDb(sb.db);
    expect(await sb.run(args)).toEqual({ code, stdout: "", stderr: `madmail: ${message}\n` });
    expect(dumpDb(sb.db)).toBe(before);
  });
});

describe("admin-token", () => {
  test("before init: exit 1 with advice, and no state file made by the look", async () => {
    expect(await sb.run(["admin-token"])).toEqual({
      code: 1, stdout: "", stderr: `madmail: no state file at ${sb.db}: run \`madmail init --domain DOMAIN\` first, or point --db (or MADMAIL_DB) at the one in use\n`,
    });
    expect(existsSync(sb.db)).toBe(false);
  });

  test("shows when it was set; --rotate prints a new one once and replaces the hash", async () => {
    const first = TOKEN_LINE.exec(await ok(["init"]))![1]!;
    expect(await ok(["admin-token"])).toMatch(/^Admin token set at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \(only its hash is stored\)\. Use --rotate to replace it\.\n$/);
    const r = await sb.run(["admin-token", "--rotate"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^mma_[A-Za-z0-9_-]{43}\n$/);
    expect(r.stderr).toBe("Admin token replaced and stored as a hash: it cannot be shown again.\n");
    const second = r.stdout.trim();
    expect(second).not.toBe(first);
    expect((await meta()).admin_token_hash).toBe(sha256(second));
    expect(nowhereOnDisk(second)).toBe(true);
  });
});
