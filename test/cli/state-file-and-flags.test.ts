// The state file as a sysadmin meets it (who may read it, what a copy of it holds, what a
// mistyped path does) and the flags and values the CLI must refuse before changing anything.
import { afterEach, beforeEach, expect, test } from "bun:test";
import { existsSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { Database } from "bun:sqlite";
import { sandbox, type Sandbox } from "../helpers/binary.ts";

let sb: Sandbox;
beforeEach(() => {
  sb = sandbox();
});
afterEach(() => sb.cleanup());

const init = async () => expect((await sb.run(["init", "--domain", "chat.test", "--quiet"])).code).toBe(0);

test("a new state file is 0600 in a 0700 directory (it holds secrets), and the -wal gets the file's mode", async () => {
  await init();
  expect(statSync(join(sb.dir, "data")).mode & 0o777).toBe(0o700);
  expect(statSync(sb.db).mode & 0o777).toBe(0o600);
  expect(statSync(`${sb.db}-wal`).mode & 0o777).toBe(0o600);
});

test("after a command, the file alone holds the state: the WAL is folded in", async () => {
  await init();
  expect((await sb.run(["user", "add", "bob@chat.test"])).code).toBe(0);
  // What a `cp madmail.db backup.db` would take: the file without its -wal.
  const copy = new Database(sb.db, { readonly: true });
  try {
    expect(copy.query("select address from users").all()).toEqual([{ address: "bob@chat.test" }]);
  } finally {
    copy.close();
  }
});

test("a command that only reads, on a missing state file, exits 1 and creates nothing", async () => {
  const typo = join(sb.dir, "typo", "madmail.db");
  for (const args of [["user", "list"], ["queue", "list"], ["queue", "stats"], ["config", "get", "hostname"], ["dkim", "list"], ["federation", "status"], ["admin-token"]]) {
    const r = await sb.run([...args, "--db", typo]);
    expect(r).toMatchObject({ code: 1, stdout: "" });
    expect(r.stderr).toBe(`madmail: no state file at ${typo}: run \`madmail init --domain DOMAIN\` first, or point --db (or MADMAIL_DB) at the one in use\n`);
  }
  expect(existsSync(join(sb.dir, "typo"))).toBe(false);
  expect((await sb.run(["domain", "add", "chat.test", "--db", typo, "--quiet"])).code).toBe(0);
  expect(existsSync(typo)).toBe(true);
});

test("--no-X only for on/off flags: for a value option it is an unknown option, and nothing changes", async () => {
  await init();
  for (const args of [["dkim", "generate", "chat.test", "--no-selector"], ["endpoint-cache", "set", "q.test", "b.test", "--no-comment"], ["user", "add", "z@chat.test", "--no-quota"]]) {
    const r = await sb.run(args);
    expect(r.code).toBe(2);
    expect(r.stderr).toStartWith(`madmail: unknown option "${args.at(-1)}"`);
  }
  expect(existsSync(join(sb.dir, "data", "dkim"))).toBe(false);
  expect((await sb.run(["user", "list", "--json"])).stdout.trim()).toBe("[]");
  expect((await sb.run(["endpoint-cache", "list", "--json"])).stdout.trim()).toBe("[]");
  // A real on/off flag keeps its --no- form.
  expect((await sb.run(["exchanger", "add", "hub", "https://hub.test", "--no-fallback", "--quiet"])).code).toBe(0);
});

test("durations over 100 years are refused; an exchanger URL with a query is refused; federation policy MODE --json is JSON", async () => {
  await init();
  const r = await sb.run(["config", "set", "queue.lifetime", "10000000000d"]);
  expect(r.code).toBe(2);
  expect(r.stderr).toContain("out of range");
  expect((await sb.run(["config", "set", "queue.lifetime", "36500d"])).code).toBe(0);
  const url = await sb.run(["exchanger", "add", "q", "http://127.0.0.1:9?x=1"]);
  expect(url.code).toBe(2);
  expect(url.stderr).toContain('invalid exchanger URL "http://127.0.0.1:9?x=1"');
  const policy = await sb.run(["federation", "policy", "reject", "--json"]);
  expect(JSON.parse(policy.stdout)).toEqual({ mode: "reject" });
});

test("dkim generate --force in the month of the key in use: the new key gets a selector of its own", async () => {
  await init();
  expect((await sb.run(["dkim", "generate", "chat.test", "--quiet"])).code).toBe(0);
  const first = JSON.parse((await sb.run(["dkim", "show", "chat.test", "--json"])).stdout).selector as string;
  expect((await sb.run(["dkim", "generate", "chat.test", "--force", "--quiet"])).code).toBe(0);
  const second = JSON.parse((await sb.run(["dkim", "show", "chat.test", "--json"])).stdout).selector as string;
  expect(second).toBe(`${first}-2`);
  expect(readdirSync(join(sb.dir, "data", "dkim", "chat.test")).sort()).toEqual(["active.json", `${second}.key`, "retired"]);
  const same = await sb.run(["dkim", "generate", "chat.test", "--force", "--selector", second]);
  expect(same).toMatchObject({ code: 2, stderr: `madmail: selector ${second} is the one in use for chat.test; give the new key another --selector\n` });
  // A third and a fourth key: names never used for this domain (the first ones' records may
  // still be published), not the first name again.
  const selectors = [first, second];
  for (const n of [3, 4]) {
    expect((await sb.run(["dkim", "generate", "chat.test", "--force", "--quiet"])).code).toBe(0);
    selectors.push(JSON.parse((await sb.run(["dkim", "show", "chat.test", "--json"])).stdout).selector);
    expect(selectors.at(-1)).toBe(`${first}-${n}`);
  }
  const old = await sb.run(["dkim", "generate", "chat.test", "--force", "--selector", first]);
  expect(old).toMatchObject({
    code: 2, stderr: `madmail: selector ${first} belonged to an earlier key of chat.test (its DNS record may still be published); give the new key another --selector\n`,
  });
  expect(JSON.parse((await sb.run(["dkim", "show", "chat.test", "--json"])).stdout).selector).toBe(`${first}-4`);
});

test("serve refuses half a TLS pair (no TLS at all would offer AUTH in the clear)", async () => {
  await init();
  await sb.run(["config", "set", "tls.cert", "/etc/ssl/certs/none.pem"]);
  const r = await sb.run(["serve", "--http", "off", "--smtp", "off", "--lmtp", "off", "--submission", "off"]);
  expect(r.code).toBe(1);
  expect(r.stderr).toContain("madmail: tls.cert is set but tls.key is empty: set both (madmail config set tls.key PATH) or unset tls.cert");
});

test("config set KEY - takes the value from standard input (a password stays out of ps and the history)", async () => {
  await init();
  const r = await sb.run(["config", "set", "relay.smarthost_password", "-"], { stdin: "s3cret pass\nignored\n" });
  expect(r).toEqual({ code: 0, stdout: "relay.smarthost_password = ********\n", stderr: "" });
  const db = new Database(sb.db, { readonly: true });
  try {
    expect(db.query("select value from settings where key = 'relay.smarthost_password'").get()).toEqual({ value: "s3cret pass" });
  } finally {
    db.close();
  }
});

test("federation block of a local domain: stored as asked, with a warning that it has no effect", async () => {
  await init();
  const r = await sb.run(["federation", "block", "chat.test"]);
  expect(r).toEqual({ code: 0, stdout: "Blocked: chat.test\n", stderr: "madmail: warning: chat.test is a local domain; local domains always pass, so this rule has no effect\n" });
});

test("a stored value that no longer parses: config get shows the default serve uses, and says why", async () => {
  await init();
  const db = new Database(sb.db);
  try {
    db.run("insert or replace into settings (key, value) values ('queue.concurrency', 'abc')");
  } finally {
    db.close();
  }
  const r = await sb.run(["config", "get", "queue.concurrency", "--json"]);
  expect(JSON.parse(r.stdout)).toMatchObject({ key: "queue.concurrency", value: "64", is_default: true });
  expect(r.stderr).toBe('madmail: warning: queue.concurrency: the stored value "abc" is invalid, so the default is in effect; fix it with `madmail config set queue.concurrency VALUE` or `madmail config unset queue.concurrency`\n');
});

test("small CLI edges: --db without a value; relay-domains needs no LMTP listener; a line break in a comment keeps the table's rows whole", async () => {
  await init();
  expect(await sb.run(["--db"])).toMatchObject({ code: 2, stderr: "madmail: option --db needs a value\nRun `madmail --help` for usage.\n" });
  await sb.run(["config", "set", "listen.lmtp", "off"]);
  expect(await sb.run(["mta", "postfix-maps", "--kind", "relay-domains"])).toMatchObject({ code: 0, stdout: "chat.test chat.test\n" });
  expect((await sb.run(["mta", "postfix-maps"])).code).toBe(1);
  expect((await sb.run(["endpoint-cache", "set", "q.test", "b.test", "--comment", "moved\tthere\nlast week"])).code).toBe(0);
  const table = (await sb.run(["endpoint-cache", "list"])).stdout.trimEnd().split("\n");
  expect(table).toHaveLength(2);
  expect(table[1]).toContain("moved there last week");
});

test("madmail send without a recipient is a usage error (exit 2), not a refused message (exit 1); nothing is queued", async () => {
  await init();
  await sb.run(["user", "add", "alice@chat.test"]);
  for (const to of ["", ",", " , "]) {
    const r = await sb.run(["send", "--from", "alice@chat.test", "--to", to], { stdin: "Subject: x\r\n\r\nbody\r\n" });
    expect(r).toMatchObject({ code: 2, stdout: "", stderr: "madmail: no recipient: --to needs an address\n" });
  }
  expect((await sb.run(["queue", "list", "--json"])).stdout).toBe("[]\n");
});

test("a flag at the end missing its value says so, also after a global flag before the command", async () => {
  await init();
  for (const args of [["--db", sb.db, "queue", "list", "--state"], ["queue", "list", "--state"], ["--json", "queue", "list", "--domain"]]) {
    const r = await sb.run(args);
    expect(r).toMatchObject({ code: 2, stdout: "" });
    expect(r.stderr).toStartWith(`madmail: option ${args.at(-1)} needs a value`);
  }
});

test("tables line up as a terminal shows them: wide characters take two columns", async () => {
  await init();
  for (const u of ["张伟@chat.test", "bob@chat.test"]) expect((await sb.run(["user", "add", u])).code).toBe(0);
  const lines = (await sb.run(["user", "list"])).stdout.trimEnd().split("\n");
  // The second column starts at the same screen column on every line.
  const starts = lines.map((l) => Bun.stringWidth(l.slice(0, l.search(/ {2}\S/) + 2)));
  expect(new Set(starts).size).toBe(1);
});

test("commands that need something already there (remove, user, queue, send, ...) exit 1 on a missing state file and leave nothing", async () => {
  const typo = join(sb.dir, "typo", "madmail.db");
  const missing = `madmail: no state file at ${typo}: run \`madmail init --domain DOMAIN\` first, or point --db (or MADMAIL_DB) at the one in use\n`;
  for (const [args, stdin] of [
    [["user", "add", "bob@chat.test"]], [["user", "remove", "bob@chat.test"]], [["user", "quota", "bob@chat.test", "1G"]],
    [["user", "password", "bob@chat.test"], "pw\n"], [["domain", "remove", "chat.test"]], [["federation", "policy"]],
    [["federation", "remove", "x.test"]], [["endpoint-cache", "get", "a.test"]], [["endpoint-cache", "remove", "a.test"]],
    [["queue", "flush"]], [["queue", "retry", "--all"]], [["config", "unset", "hostname"]], [["dkim", "generate", "chat.test"]],
    [["exchanger", "disable", "hub"]], [["send", "--from", "a@chat.test", "--to", "b@x.test"], "Subject: x\r\n\r\nx\r\n"],
  ] as [string[], string?][]) {
    const r = await sb.run([...args, "--db", typo], { stdin });
    expect({ args, ...r }).toEqual({ args, code: 1, stdout: "", stderr: missing });
  }
  expect(existsSync(join(sb.dir, "typo"))).toBe(false);
  // A refused mode is refused before the file is made.
  expect((await sb.run(["federation", "policy", "bogus", "--db", typo])).code).toBe(2);
  expect(existsSync(join(sb.dir, "typo"))).toBe(false);
});

test("another program's SQLite file is refused untouched; an empty file is no state file for a reading command; --db '' is a usage error", async () => {
  const foreign = join(sb.dir, "photos.db");
  const f = new Database(foreign);
  f.run("create table photos (id integer primary key, path text)");
  f.run("insert into photos values (1, 'a.jpg')");
  f.close();
  const before = await Bun.file(foreign).bytes();
  for (const args of [["domain", "list"], ["domain", "add", "chat.test"], ["init", "--domain", "chat.test"]]) {
    const r = await sb.run([...args, "--db", foreign]);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(`madmail: ${foreign} is not a madmail state file (an SQLite database of another program: it has tables but no madmail schema); it was not changed\n`);
  }
  expect(await Bun.file(foreign).bytes()).toEqual(before);
  expect(readdirSync(sb.dir).filter((n) => n.startsWith("photos.db"))).toEqual(["photos.db"]); // no -wal, -shm

  const empty = join(sb.dir, "empty.db");
  await Bun.write(empty, "");
  const r = await sb.run(["domain", "list", "--db", empty]);
  expect(r.code).toBe(1);
  expect(r.stderr).toStartWith(`madmail: ${empty} is empty, not yet a madmail state file: run \`madmail init --domain DOMAIN\` first`);
  expect(statSync(empty).size).toBe(0);
  expect((await sb.run(["init", "--domain", "chat.test", "--quiet", "--db", empty])).code).toBe(0);
  expect((await sb.run(["domain", "list", "--json", "--db", empty])).stdout).toContain("chat.test");

  for (const args of [["--db", "", "domain", "add", "x.test"], ["domain", "add", "x.test", "--db", ""], ["domain", "add", "x.test", "--db="]]) {
    const e = await sb.run(args, { env: { MADMAIL_DB: "" } });
    expect(e.code).toBe(2);
    expect(e.stderr).toStartWith("madmail: --db needs a path (it was empty)");
  }
  expect(existsSync(join(sb.dir, "madmail-data"))).toBe(false);
});
